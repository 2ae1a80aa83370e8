//! A small JSON client whose failures are values: a measured run that hits an HTTP error is
//! counted as a failed run rather than ending the whole measurement (the test kit's client
//! panics instead, which suits tests).

use anyhow::{Context, bail};
use serde_json::Value;
use std::time::Duration;

/// Authenticated client of one Cuttle API.
#[derive(Clone)]
pub struct Api {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for `base` (`http://127.0.0.1:PORT`) sending `api_key`.
    pub fn new(base: &str, api_key: &str) -> anyhow::Result<Api> {
        // A keep-alive pool of one connection, like a CLI or a browser tab: every request of a
        // run reuses it, so connection setup is not part of the figures.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Api {
            base: base.to_owned(),
            api_key: api_key.to_owned(),
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Octopus-ApiKey", &self.api_key)
    }

    /// GET returning JSON; fails unless 200.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        json_body(response, 200, path).await
    }

    /// GET returning text; fails unless 200.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {text}");
        }
        Ok(text)
    }

    /// POST JSON; fails unless the answer is `expected`.
    pub async fn post(&self, path: &str, body: &Value, expected: u16) -> anyhow::Result<Value> {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        json_body(response, expected, path).await
    }

    /// GET of a URL outside the API (metrics), as text; fails unless 200.
    pub async fn get_url(&self, url: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        if status != 200 {
            bail!("GET {url} answered {status}");
        }
        Ok(text)
    }
}

async fn json_body(
    response: reqwest::Response,
    expected: u16,
    path: &str,
) -> anyhow::Result<Value> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    if status != expected {
        bail!("{path} answered {status} (expected {expected}): {text}");
    }
    serde_json::from_str(&text)
        .with_context(|| format!("{path} answered something other than JSON"))
}

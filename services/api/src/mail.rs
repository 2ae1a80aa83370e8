//! Outgoing mail through SMTP (lettre): invitations and address verification.

use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use cuttle_platform::SmtpConfig;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Sends mail; built from `[smtp]`.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: Option<String>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    /// The mailer `config` describes; `None` without a host.
    pub fn from_config(config: &SmtpConfig) -> anyhow::Result<Option<Mailer>> {
        let Some(host) = config.host.as_deref().filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let builder = match config.security.as_str() {
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            other => anyhow::bail!("smtp.security is '{other}'; use starttls, tls or none"),
        };
        let mut builder = builder.port(config.port);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let from: Mailbox = config.from.parse().map_err(|err| {
            anyhow::anyhow!("smtp.from '{}' is not an address: {err}", config.from)
        })?;
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
            public_url: config
                .public_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_owned()),
        }))
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> ApiResult<()> {
        let to: Mailbox = to.parse().map_err(|err| {
            ApiError::invalid_field("EmailAddress", format!("'{to}' is not an address: {err}"))
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(ApiError::internal)?;
        self.transport.send(message).await.map_err(|err| {
            tracing::error!(error = %err, "mail could not be sent");
            ApiError::bad_request(
                "The mail could not be sent; try again later or ask your operator to check the SMTP settings.",
                Vec::new(),
            )
        })?;
        Ok(())
    }

    /// An absolute link to a portal `path`, on `smtp.public_url` or the request's own address.
    pub fn link(&self, headers: &HeaderMap, path: &str) -> String {
        let base = self.public_url.clone().unwrap_or_else(|| {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        });
        format!("{base}{path}")
    }
}

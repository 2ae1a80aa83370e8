//! A job's variables on the worker: sensitive values opened with the master key, `#{...}`
//! evaluated (`libs/template`), and the script helpers that give them to Bash and Python scripts
//! and PowerShell scripts the way Octopus's do (`get_octopusvariable`, `set_octopusvariable`, `fail_step`,
//! `write_highlight`, `write_warning`, `write_verbose`, `write_wait`, `new_octopusartifact`).
//!
//! The helpers travel inside the script itself, so a script run on an agent gets them too:
//! - Bash: one first line, `eval "$(... | base64 -d)"`, defines the functions; the script's own
//!   lines follow from line 2.
//! - Python: the helpers, then the script compiled from its own text under its own name, so
//!   tracebacks keep its line numbers and `from __future__` imports still work.
//! - PowerShell: `$OctopusParameters` and the helpers (`Set-OctopusVariable`, `Fail-Step`,
//!   `Write-Highlight`, `Write-Wait`, `Write-Verbose`, `Write-Warning`, `New-OctopusArtifact`),
//!   then the script run as a script block (so its `param()` block still works) or by path, and
//!   its exit code passed on.
//!
//! The script file holds the variables' values, sensitive ones included, for as long as the job
//! runs: it is written owner-only inside the job directory, which is removed afterwards.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cuttle_contracts::JobVariable;
use cuttle_conventions::Variables;
use cuttle_domain::script::ScriptSyntax;
use cuttle_secrets::Keyring;
use cuttle_template::VariableDictionary;
use std::path::Path;

/// A job's variables, ready to use.
#[derive(Default)]
pub struct JobVariables {
    variables: Variables,
    /// Plain text of every sensitive value (raw and evaluated), for masking.
    sensitive: Vec<String>,
}

impl JobVariables {
    /// Opens the job's sensitive values; fails with a reason when one cannot be opened.
    pub fn open(variables: &[JobVariable], keyring: Option<&Keyring>) -> Result<Self, String> {
        let mut dictionary = VariableDictionary::new();
        let mut sensitive = Vec::new();
        for variable in variables {
            let value = if variable.sensitive && !variable.value.is_empty() {
                let keyring = keyring.ok_or_else(|| {
                    format!(
                        "The variable '{}' is sensitive and this worker has no master key (secrets.master_key) to decrypt it.",
                        variable.name
                    )
                })?;
                let plain = keyring.open(&variable.value).map_err(|err| {
                    format!(
                        "The sensitive variable '{}' could not be decrypted: {err}.",
                        variable.name
                    )
                })?;
                sensitive.push(plain.clone());
                plain
            } else {
                variable.value.clone()
            };
            dictionary.set(variable.name.clone(), value);
        }
        // What a sensitive value evaluates to is as secret as the value.
        let evaluated: Vec<String> = sensitive
            .iter()
            .filter(|value| value.contains("#{"))
            .map(|value| dictionary.evaluate_lenient(value))
            .collect();
        sensitive.extend(evaluated);
        Ok(JobVariables {
            variables: Variables::new(dictionary),
            sensitive,
        })
    }

    /// Every sensitive value, for masking the log.
    pub fn sensitive_values(&self) -> Vec<String> {
        self.sensitive.clone()
    }

    /// `text` with `#{...}` evaluated; unknown variables stay as written.
    pub fn substitute(&self, text: &str) -> String {
        self.variables.substitute(text)
    }

    /// The value of the variable `name` (in any case), evaluated; `None` when it is not set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.variables.get(name)
    }

    /// Every variable with its value evaluated, in the order the variables were first set, as
    /// scripts and structured configuration replacement see them.
    pub fn evaluated(&self) -> Vec<(String, String)> {
        self.variables.evaluated()
    }

    /// The variables as the file features (`libs/conventions`) read them.
    pub fn as_conventions(&self) -> &Variables {
        &self.variables
    }

    /// An inline script's text as it runs: substituted, with the helpers.
    pub fn inline_script(&self, syntax: ScriptSyntax, body: &str) -> String {
        let body = self.substitute(body);
        match syntax {
            ScriptSyntax::Bash => format!("{}\n{body}", self.bash_prelude()),
            ScriptSyntax::Python => format!(
                "{}\n{}",
                self.python_helpers(),
                python_exec_text(&body, "script.py")
            ),
            ScriptSyntax::PowerShell => format!(
                "{}\n$__cuttleScript = [ScriptBlock]::Create((__CuttleDecode '{}'))\n& $__cuttleScript @args\nexit $LASTEXITCODE\n",
                self.powershell_helpers(),
                STANDARD.encode(body)
            ),
        }
    }

    /// A script that defines the helpers, then runs the script file `path` with the arguments it
    /// was given, and exits with its exit code.
    pub fn bootstrap(&self, syntax: ScriptSyntax, path: &Path) -> String {
        let path_text = path.display().to_string();
        match syntax {
            ScriptSyntax::Bash => format!(
                "{}\nsource {} \"$@\"\n",
                self.bash_prelude(),
                bash_quote(&path_text)
            ),
            ScriptSyntax::Python => format!(
                "{}\n{}",
                self.python_helpers(),
                python_exec_file(&path_text)
            ),
            ScriptSyntax::PowerShell => format!(
                "{}\n& (__CuttleDecode '{}') @args\nexit $LASTEXITCODE\n",
                self.powershell_helpers(),
                STANDARD.encode(path_text)
            ),
        }
    }

    /// One line that defines the Bash helpers.
    fn bash_prelude(&self) -> String {
        let mut helpers = String::from(BASH_HELPERS);
        helpers.push_str("get_octopusvariable() {\n  case \"${1,,}\" in\n");
        for (name, value) in self.evaluated() {
            helpers.push_str(&format!(
                "    {}) printf '%s' {} ;;\n",
                bash_quote(&name.to_lowercase()),
                bash_quote(&value)
            ));
        }
        helpers.push_str("  esac\n}\n");
        format!(
            "eval \"$(printf '%s' '{}' | base64 -d)\"",
            STANDARD.encode(helpers)
        )
    }

    /// The Python helpers, with `octopusvariables`.
    fn python_helpers(&self) -> String {
        let variables: serde_json::Map<String, serde_json::Value> = self
            .evaluated()
            .into_iter()
            .map(|(name, value)| (name, serde_json::Value::String(value)))
            .collect();
        let json = serde_json::Value::Object(variables).to_string();
        PYTHON_HELPERS.replace("@VARIABLES@", &STANDARD.encode(json))
    }

    /// The PowerShell helpers, with `$OctopusParameters` filled in.
    fn powershell_helpers(&self) -> String {
        let parameters: String = self
            .evaluated()
            .into_iter()
            .map(|(name, value)| {
                format!(
                    "$OctopusParameters[(__CuttleDecode '{}')] = (__CuttleDecode '{}')\n",
                    STANDARD.encode(name),
                    STANDARD.encode(value)
                )
            })
            .collect();
        POWERSHELL_HELPERS.replace("@VARIABLES@\n", &parameters)
    }
}

/// Single-quotes `text` for Bash.
fn bash_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Python that runs `source` as the script `name`.
fn python_exec_text(source: &str, name: &str) -> String {
    format!(
        "__cuttle_run(__cuttle_base64.b64decode('{}').decode('utf-8'), {})\n",
        STANDARD.encode(source),
        serde_json::Value::String(name.to_owned())
    )
}

/// Python that runs the file at `path`.
fn python_exec_file(path: &str) -> String {
    let path = serde_json::Value::String(path.to_owned());
    format!(
        "import os as __cuttle_os\n__cuttle_sys.argv[0] = {path}\n__cuttle_sys.path.insert(0, __cuttle_os.path.dirname({path}))\nwith open({path}, encoding='utf-8') as __cuttle_file:\n    __cuttle_source = __cuttle_file.read()\n__cuttle_run(__cuttle_source, {path})\n"
    )
}

/// The Bash helpers; `get_octopusvariable` is generated per job.
const BASH_HELPERS: &str = include_str!("helpers/octopus.sh");

/// The PowerShell helpers; the `@VARIABLES@` line becomes one line per variable.
const POWERSHELL_HELPERS: &str = include_str!("helpers/octopus.ps1");

/// The Python helpers; `@VARIABLES@` becomes the job's variables as base64 JSON.
const PYTHON_HELPERS: &str = include_str!("helpers/octopus.py");

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(name: &str, value: &str, sensitive: bool) -> JobVariable {
        JobVariable {
            name: name.into(),
            value: value.into(),
            sensitive,
        }
    }

    #[test]
    fn sensitive_values_open_with_the_key_and_are_listed_for_masking() {
        let keyring = Keyring::new(&Keyring::generate_key().expect("key"), []).expect("key");
        let sealed = keyring.seal("pa$$").expect("seal");
        let vars = [
            variable("Password", &sealed, true),
            variable("Conn", "user:#{Password}@db", false),
            variable(
                "Wrapped",
                &keyring.seal("[#{Password}]").expect("seal"),
                true,
            ),
        ];
        let job = JobVariables::open(&vars, Some(&keyring)).expect("open");
        assert_eq!(job.substitute("#{Conn}"), "user:pa$$@db");
        let masks = job.sensitive_values();
        assert!(masks.contains(&"pa$$".to_owned()), "{masks:?}");
        assert!(masks.contains(&"[pa$$]".to_owned()), "{masks:?}");
        // Without the key, the job cannot run.
        let refused = JobVariables::open(&vars, None).err().expect("refused");
        assert!(refused.contains("no master key"), "{refused}");
        let other = Keyring::new(&Keyring::generate_key().expect("key"), []).expect("key");
        assert!(JobVariables::open(&vars, Some(&other)).is_err());
    }

    #[test]
    fn later_values_of_a_name_win() {
        let job = JobVariables::open(
            &[
                variable("A", "first", false),
                variable("a", "second", false),
            ],
            None,
        )
        .expect("open");
        assert_eq!(job.substitute("#{A}"), "second");
    }

    /// Values that would end or escape a PowerShell string if they were written into one:
    /// both quote kinds, the typographic quotes PowerShell also takes as quotes, subexpressions,
    /// backticks and newlines.
    const HOSTILE: &str = "it's \"$(Remove-Item /)\" \u{2018}x\u{2019} `n @args\nnext line";

    #[test]
    fn powershell_gets_names_values_and_the_script_only_as_base64() {
        let job = JobVariables::open(
            &[
                variable("Octopus.Environment.Name", "Test", false),
                variable(HOSTILE, HOSTILE, false),
            ],
            None,
        )
        .expect("open");
        let body = format!("param([string]$Who)\nWrite-Host {HOSTILE}");
        let script = job.inline_script(ScriptSyntax::PowerShell, &body);
        let (template_start, template_end) = POWERSHELL_HELPERS
            .split_once("@VARIABLES@\n")
            .expect("the helpers have a variables line");
        let rest = script.strip_prefix(template_start).expect("helpers first");
        let (parameters, tail) = rest
            .split_once(template_end)
            .expect("then the helpers' end");
        let decode =
            |text: &str| String::from_utf8(STANDARD.decode(text).expect("base64")).expect("utf-8");
        let assignment =
            regex_lite::Regex::new(r"^\$OctopusParameters\[\(__CuttleDecode '([A-Za-z0-9+/=]*)'\)\] = \(__CuttleDecode '([A-Za-z0-9+/=]*)'\)$")
                .expect("regex");
        let mut seen = Vec::new();
        for line in parameters.lines() {
            let captures = assignment
                .captures(line)
                .unwrap_or_else(|| panic!("{line}"));
            seen.push((decode(&captures[1]), decode(&captures[2])));
        }
        assert_eq!(
            seen,
            vec![
                ("Octopus.Environment.Name".to_owned(), "Test".to_owned()),
                (HOSTILE.to_owned(), HOSTILE.to_owned())
            ]
        );
        // The script itself runs as a script block made from base64, and its exit code is kept.
        let run = regex_lite::Regex::new(
            r"^\n\$__cuttleScript = \[ScriptBlock\]::Create\(\(__CuttleDecode '([A-Za-z0-9+/=]*)'\)\)\n& \$__cuttleScript @args\nexit \$LASTEXITCODE\n$",
        )
        .expect("regex");
        let captures = run.captures(tail).unwrap_or_else(|| panic!("{tail}"));
        assert_eq!(decode(&captures[1]), body);
        // A script file is called by its path, also as base64.
        let path = Path::new("/work/it's \u{2019}here/deploy.ps1");
        let bootstrap = job.bootstrap(ScriptSyntax::PowerShell, path);
        let call = format!(
            "\n& (__CuttleDecode '{}') @args\nexit $LASTEXITCODE\n",
            STANDARD.encode(path.display().to_string())
        );
        assert!(bootstrap.ends_with(&call), "{bootstrap}");
        assert!(!bootstrap.contains("it's"), "{bootstrap}");
    }

    /// Where pwsh is installed, the helpers run for real: `$OctopusParameters` reads any case,
    /// and the others print the service messages the worker reads. (pwsh cannot be installed on
    /// our CI machines; there the generated text is checked above.)
    #[test]
    fn powershell_helpers_print_service_messages_under_pwsh() {
        let Some(pwsh) = crate::script::find_on_path("pwsh") else {
            return;
        };
        let job = JobVariables::open(&[variable("Greeting", HOSTILE, false)], None).expect("open");
        let body = "param([string]$Who)\nWrite-Host \"[$($OctopusParameters['greeting'])] $Who\"\nSet-OctopusVariable -Name 'Out' -Value 'v' -Sensitive\nWrite-Highlight 'look'\nFail-Step 'stopped'";
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("script.ps1");
        std::fs::write(&file, job.inline_script(ScriptSyntax::PowerShell, body)).expect("write");
        let output = std::process::Command::new(pwsh)
            .args(["-NoLogo", "-NoProfile", "-NonInteractive", "-File"])
            .arg(&file)
            .arg("-Who")
            .arg("me")
            .output()
            .expect("pwsh runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        let b64 = |text: &str| STANDARD.encode(text);
        for expected in [
            format!("[{HOSTILE}] me"),
            format!(
                "##octopus[setVariable name='{}' value='{}' sensitive='{}']",
                b64("Out"),
                b64("v"),
                b64("True")
            ),
            "##octopus[stdout-highlight]\nlook\n##octopus[stdout-default]".to_owned(),
            format!("##octopus[resultMessage message='{}']", b64("stopped")),
        ] {
            assert!(stdout.contains(&expected), "{expected} not in {stdout}");
        }
    }

    #[test]
    fn bash_quoting_survives_quotes_and_newlines() {
        assert_eq!(bash_quote("it's"), "'it'\\''s'");
        assert_eq!(bash_quote("a\nb"), "'a\nb'");
    }
}

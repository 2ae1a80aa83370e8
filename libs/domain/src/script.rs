//! Script syntaxes a worker can run.

/// A script language from `Octopus.Action.Script.Syntax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScriptSyntax {
    /// Runs with `bash`.
    Bash,
    /// Runs with `python3`.
    Python,
    /// Runs with `pwsh` when it is on PATH.
    PowerShell,
}

/// A syntax Octopus knows but Cuttle cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("script syntax '{0}' is not supported; use Bash, Python or PowerShell")]
pub struct UnsupportedSyntax(pub String);

impl ScriptSyntax {
    /// Parses the property value; Octopus defaults to PowerShell when it is absent.
    pub fn parse(value: Option<&str>) -> Result<ScriptSyntax, UnsupportedSyntax> {
        match value.map(str::trim) {
            None | Some("") => Ok(ScriptSyntax::PowerShell),
            Some(v) if v.eq_ignore_ascii_case("bash") => Ok(ScriptSyntax::Bash),
            Some(v) if v.eq_ignore_ascii_case("python") => Ok(ScriptSyntax::Python),
            Some(v) if v.eq_ignore_ascii_case("powershell") => Ok(ScriptSyntax::PowerShell),
            Some(other) => Err(UnsupportedSyntax(other.to_owned())),
        }
    }

    /// The syntax of a script file by its extension (`.sh`, `.py`, `.ps1`, any case), as Octopus
    /// picks the runner for a script inside a package.
    pub fn from_file_name(name: &str) -> Option<ScriptSyntax> {
        let (_, extension) = name.rsplit_once('.')?;
        [
            ScriptSyntax::Bash,
            ScriptSyntax::Python,
            ScriptSyntax::PowerShell,
        ]
        .into_iter()
        .find(|syntax| syntax.extension().eq_ignore_ascii_case(extension))
    }

    /// File extension for the script file the worker writes.
    pub fn extension(self) -> &'static str {
        match self {
            ScriptSyntax::Bash => "sh",
            ScriptSyntax::Python => "py",
            ScriptSyntax::PowerShell => "ps1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_syntax_means_powershell_and_csharp_is_refused() {
        assert_eq!(ScriptSyntax::parse(None), Ok(ScriptSyntax::PowerShell));
        assert_eq!(ScriptSyntax::parse(Some("bash")), Ok(ScriptSyntax::Bash));
        assert!(ScriptSyntax::parse(Some("CSharp")).is_err());
    }

    #[test]
    fn a_script_file_s_extension_names_its_syntax() {
        assert_eq!(
            ScriptSyntax::from_file_name("scripts/Deploy.SH"),
            Some(ScriptSyntax::Bash)
        );
        assert_eq!(
            ScriptSyntax::from_file_name("a.b/run.py"),
            Some(ScriptSyntax::Python)
        );
        assert_eq!(
            ScriptSyntax::from_file_name("Deploy.ps1"),
            Some(ScriptSyntax::PowerShell)
        );
        assert_eq!(ScriptSyntax::from_file_name("Deploy.csx"), None);
        assert_eq!(ScriptSyntax::from_file_name("Deploy"), None);
    }
}

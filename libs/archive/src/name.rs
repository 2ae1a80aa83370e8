//! Entry names and link targets, parsed into components that cannot leave the target.
//!
//! Backslashes count as separators everywhere: zips written on Windows use them, and treating
//! them as ordinary characters on Linux would let `..\x` through here only to become a
//! traversal on a Windows agent.

/// A relative path of normal components only: no `..`, no `.`, no empty component, no root,
/// no drive prefix, no NUL. Empty means the target directory itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EntryPath {
    components: Vec<String>,
}

impl EntryPath {
    pub(crate) fn components(&self) -> &[String] {
        &self.components
    }

    pub(crate) fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The `/`-joined form, used as the key of the extraction's tree and in reports.
    pub(crate) fn key(&self) -> String {
        self.components.join("/")
    }
}

/// One step of a link target: up to the parent, or down into a named child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkStep {
    Up,
    Down(String),
}

/// Parses an entry's name; the error is a reason a user can read.
pub(crate) fn parse_entry_name(raw: &str) -> Result<EntryPath, String> {
    let steps = parse_steps(raw, "name")?;
    let mut components = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            LinkStep::Up => {
                return Err(
                    "the name has a `..` component, which could climb out of the target directory"
                        .to_owned(),
                );
            }
            LinkStep::Down(component) => components.push(component),
        }
    }
    Ok(EntryPath { components })
}

/// Parses a symbolic link's target. `..` is allowed here; whether the target stays inside is
/// decided by resolving it against the whole archive (see `walk.rs`).
pub(crate) fn parse_link_target(raw: &str) -> Result<Vec<LinkStep>, String> {
    parse_steps(raw, "link target")
}

/// The `/`-joined form of a link target, which is what is written to disk: exactly what was
/// checked, with backslashes already turned into separators.
pub(crate) fn link_target_text(steps: &[LinkStep]) -> String {
    if steps.is_empty() {
        return ".".to_owned();
    }
    let parts: Vec<&str> = steps
        .iter()
        .map(|step| match step {
            LinkStep::Up => "..",
            LinkStep::Down(component) => component.as_str(),
        })
        .collect();
    parts.join("/")
}

fn parse_steps(raw: &str, what: &str) -> Result<Vec<LinkStep>, String> {
    if raw.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if raw.contains('\0') {
        return Err(format!(
            "the {what} contains a NUL byte, which would truncate it differently on different tools"
        ));
    }
    let unified = raw.replace('\\', "/");
    if unified.starts_with('/') {
        return Err(format!(
            "the {what} is an absolute or UNC path; package paths must be relative"
        ));
    }
    let mut steps = Vec::new();
    for component in unified.split('/') {
        match component {
            "" | "." => {}
            ".." => steps.push(LinkStep::Up),
            _ => {
                check_component(component, what)?;
                steps.push(LinkStep::Down(component.to_owned()));
            }
        }
    }
    Ok(steps)
}

fn check_component(component: &str, what: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    // `C:` or `C:x` anywhere: `Path::join` on Windows replaces the whole path with a component
    // that carries a drive prefix, so one is refused on every platform.
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(format!(
            "the {what} has a Windows drive prefix `{}`",
            &component[..2]
        ));
    }
    // On Windows any other colon names an alternate data stream of some file.
    if cfg!(windows) && component.contains(':') {
        return Err(format!(
            "the {what} contains `:`, which Windows reads as an alternate data stream"
        ));
    }
    Ok(())
}

/// An entry name fit for an error message: control characters (NUL, newlines) escaped.
pub(crate) fn display_name(raw: &str) -> String {
    raw.chars()
        .flat_map(|character| {
            if character.is_control() {
                character.escape_default().collect::<Vec<_>>()
            } else {
                vec![character]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_names_are_split_into_components() {
        let path = parse_entry_name("./a//b/./c.txt").expect("a normal name");
        assert_eq!(path.key(), "a/b/c.txt");
        assert!(parse_entry_name("./").expect("the root").is_root());
    }

    #[test]
    fn traversal_absolute_drive_and_nul_names_are_refused() {
        for raw in [
            "..",
            "a/../b",
            "..\\x",
            "/etc/x",
            "\\\\server\\share\\x",
            "C:\\x",
            "c:x",
            "a\0b",
            "",
        ] {
            assert!(parse_entry_name(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn link_targets_keep_their_parent_steps() {
        let steps = parse_link_target("../lib\\x.so").expect("a relative target");
        assert_eq!(link_target_text(&steps), "../lib/x.so");
        assert!(parse_link_target("/tmp").is_err());
    }
}

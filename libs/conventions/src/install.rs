//! Where packages are installed, as a Tentacle installs them:
//! `Applications/<environment>/<PackageId>/<Version>[_N]`, a fresh folder for every
//! deployment. Workers and agents both lay their installations out this way.

use std::path::{Path, PathBuf};

/// A folder name from a user-chosen name: path separators and other characters that cannot be
/// in a file name become `_`, and `.`/`..` are never produced.
pub fn folder_name(name: &str) -> String {
    let cleaned: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_matches('.') {
        "" => "_".to_owned(),
        _ => cleaned,
    }
}

/// Creates and returns `parent/name`, or `parent/name_1`, `_2`, ... when it exists: every
/// deployment installs into a folder of its own. Creating the folder is what reserves it, so
/// two jobs never share one.
pub async fn reserve_fresh_dir(parent: &Path, name: &str) -> Result<PathBuf, String> {
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|err| format!("{} could not be created: {err}", parent.display()))?;
    for attempt in 0..10_000u32 {
        let candidate = if attempt == 0 {
            parent.join(name)
        } else {
            parent.join(format!("{name}_{attempt}"))
        };
        match tokio::fs::create_dir(&candidate).await {
            Ok(()) => return Ok(candidate),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(format!(
                    "The installation folder {} could not be created: {err}",
                    candidate.display()
                ));
            }
        }
    }
    Err(format!(
        "There is no free installation folder under {}; remove old installations.",
        parent.display()
    ))
}

/// The names of the regular files at the top of `dir`, sorted. Links are left out: one in a
/// package could point anywhere.
pub async fn top_level_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut names = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await.is_ok_and(|kind| kind.is_file())
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_never_escape_their_parent() {
        assert_eq!(folder_name("Production"), "Production");
        // One harmless folder: dots inside a name are not a path step.
        assert_eq!(folder_name("../etc"), ".._etc");
        assert_eq!(folder_name(".."), "_");
        assert_eq!(folder_name("a/b\\c"), "a_b_c");
        assert_eq!(folder_name("1.2.3-beta+5"), "1.2.3-beta+5");
    }

    #[tokio::test]
    async fn each_deployment_gets_a_fresh_installation_folder() {
        let root = tempfile::tempdir().unwrap();
        let first = reserve_fresh_dir(root.path(), "1.0.0").await.unwrap();
        let second = reserve_fresh_dir(root.path(), "1.0.0").await.unwrap();
        let third = reserve_fresh_dir(root.path(), "1.0.0").await.unwrap();
        assert_eq!(first, root.path().join("1.0.0"));
        assert_eq!(second, root.path().join("1.0.0_1"));
        assert_eq!(third, root.path().join("1.0.0_2"));
    }
}

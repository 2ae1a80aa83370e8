//! A normal package extracts correctly in every format: nested directories, an executable
//! `Deploy.sh`, an empty directory, Unicode names and a link inside the package.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use cuttle_archive::{ArchiveFormat, EntryKind, Limits};
use support::*;

const DEPLOY_SCRIPT: &[u8] = b"#!/bin/sh\necho deploying\n";
const SETTINGS: &[u8] = b"{\"ConnectionString\": \"Server=db\"}\n";
const UNICODE_NAME: &str = "app/données/résumé-日本語.txt";

fn normal_zip() -> Vec<u8> {
    zip_bytes(&[
        ZipItem::Directory { name: "app/" },
        ZipItem::File {
            name: "app/Deploy.sh",
            mode: 0o755,
            data: DEPLOY_SCRIPT,
        },
        ZipItem::File {
            name: "app/config/settings.json",
            mode: 0o644,
            data: SETTINGS,
        },
        ZipItem::Directory { name: "app/logs/" },
        ZipItem::File {
            name: UNICODE_NAME,
            mode: 0o644,
            data: "ünïcödé".as_bytes(),
        },
        ZipItem::Symlink {
            name: "app/settings.json",
            target: "config/settings.json",
        },
    ])
}

fn normal_tar() -> Vec<u8> {
    let unicode_data = "ünïcödé".as_bytes();
    tar_bytes(&[
        // `tar -C dir -cf p.tar .` names the root `./` and everything below `./…`.
        tar_directory("./"),
        tar_directory("./app/"),
        TarItem {
            name: b"./app/Deploy.sh",
            kind: tar::EntryType::Regular,
            mode: 0o755,
            link: b"",
            data: DEPLOY_SCRIPT,
        },
        tar_file("./app/config/settings.json", SETTINGS),
        tar_directory("./app/logs/"),
        tar_file(UNICODE_NAME, unicode_data),
        tar_symlink("./app/settings.json", "config/settings.json"),
    ])
}

fn assert_normal_package(target: &Path) {
    let app = target.join("app");
    assert_eq!(std::fs::read(app.join("Deploy.sh")).unwrap(), DEPLOY_SCRIPT);
    assert_eq!(mode_of(&app.join("Deploy.sh")), 0o755);
    assert_eq!(
        std::fs::read(app.join("config/settings.json")).unwrap(),
        SETTINGS
    );
    assert_eq!(mode_of(&app.join("config/settings.json")), 0o644);
    assert!(app.join("logs").is_dir());
    assert_eq!(std::fs::read_dir(app.join("logs")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_to_string(target.join(UNICODE_NAME)).unwrap(),
        "ünïcödé"
    );
    assert_eq!(
        std::fs::read_link(app.join("settings.json"))
            .unwrap()
            .to_str(),
        Some("config/settings.json")
    );
    assert_eq!(std::fs::read(app.join("settings.json")).unwrap(), SETTINGS);
    assert_eq!(mode_of(target), 0o755);
    let leftovers = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".partial-")
        })
        .count();
    assert_eq!(leftovers, 0, "the staging directory was left behind");
}

#[test]
fn a_normal_zip_extracts_with_modes_empty_directories_unicode_and_links() {
    let scratch = Scratch::new();
    let extracted = scratch
        .extract(
            "Deploy.1.0.0.zip",
            &normal_zip(),
            ArchiveFormat::Zip,
            &Limits::default(),
        )
        .unwrap();
    assert_normal_package(&scratch.target());
    assert_eq!(extracted.files, 3);
    assert_eq!(extracted.symlinks, 1);
    // app, app/logs, and the implied app/config and app/données.
    assert_eq!(extracted.directories, 4);
    assert_eq!(
        extracted.bytes,
        (DEPLOY_SCRIPT.len() + SETTINGS.len() + "ünïcödé".len()) as u64
    );
}

#[test]
fn a_nupkg_is_a_zip_and_extracts_the_same_way() {
    let scratch = Scratch::new();
    let format = ArchiveFormat::from_file_name("Deploy.1.0.0.nupkg").unwrap();
    assert_eq!(format, ArchiveFormat::Zip);
    scratch
        .extract(
            "Deploy.1.0.0.nupkg",
            &normal_zip(),
            format,
            &Limits::default(),
        )
        .unwrap();
    assert_normal_package(&scratch.target());
}

#[test]
fn a_normal_tar_extracts_with_modes_empty_directories_unicode_and_links() {
    let scratch = Scratch::new();
    let extracted = scratch
        .extract(
            "Deploy.1.0.0.tar",
            &normal_tar(),
            ArchiveFormat::Tar,
            &Limits::default(),
        )
        .unwrap();
    assert_normal_package(&scratch.target());
    assert_eq!(extracted.files, 3);
}

#[test]
fn a_normal_tar_gz_extracts_with_modes_empty_directories_unicode_and_links() {
    let scratch = Scratch::new();
    scratch
        .extract(
            "Deploy.1.0.0.tgz",
            &gzip(&normal_tar()),
            ArchiveFormat::TarGz,
            &Limits::default(),
        )
        .unwrap();
    assert_normal_package(&scratch.target());
}

#[test]
fn a_normal_tar_bz2_extracts_with_modes_empty_directories_unicode_and_links() {
    let scratch = Scratch::new();
    scratch
        .extract(
            "Deploy.1.0.0.tar.bz2",
            &bzip2(&normal_tar()),
            ArchiveFormat::TarBz2,
            &Limits::default(),
        )
        .unwrap();
    assert_normal_package(&scratch.target());
}

#[test]
fn a_gzip_stream_of_several_members_is_one_archive() {
    let scratch = Scratch::new();
    // `pigz` and concatenated `gzip` output: the tar continues across members.
    let tar = normal_tar();
    let split = 1024;
    let mut tgz = gzip(&tar[..split]);
    tgz.extend(gzip(&tar[split..]));
    scratch
        .extract("p.tar.gz", &tgz, ArchiveFormat::TarGz, &Limits::default())
        .unwrap();
    assert_normal_package(&scratch.target());
}

#[test]
fn a_package_extracts_into_an_existing_empty_directory_and_a_missing_parent() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.target()).unwrap();
    scratch
        .extract(
            "p.zip",
            &normal_zip(),
            ArchiveFormat::Zip,
            &Limits::default(),
        )
        .unwrap();
    assert_normal_package(&scratch.target());

    let archive = scratch.dir.path().join("p.zip");
    let nested = scratch
        .dir
        .path()
        .join("Applications/Production/Deploy/1.0.0");
    cuttle_archive::extract(&archive, ArchiveFormat::Zip, &nested, &Limits::default()).unwrap();
    assert_normal_package(&nested);
}

#[test]
fn an_empty_zip_extracts_to_an_empty_directory() {
    let scratch = Scratch::new();
    let extracted = scratch
        .extract(
            "p.zip",
            &zip_bytes(&[]),
            ArchiveFormat::Zip,
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(extracted.files, 0);
    assert_eq!(std::fs::read_dir(scratch.target()).unwrap().count(), 0);
}

#[test]
fn inspect_lists_entries_with_their_sizes_and_writes_nothing() {
    let scratch = Scratch::new();
    let archive = scratch.write_archive("p.tar.gz", &gzip(&normal_tar()));
    let entries =
        cuttle_archive::inspect(&archive, ArchiveFormat::TarGz, &Limits::default()).unwrap();
    let deploy = entries
        .iter()
        .find(|entry| entry.path == "app/Deploy.sh")
        .unwrap();
    assert_eq!(deploy.kind, EntryKind::File);
    assert_eq!(deploy.size, DEPLOY_SCRIPT.len() as u64);
    assert_eq!(deploy.mode, 0o755);
    assert!(
        entries
            .iter()
            .any(|entry| entry.path == "app/logs" && entry.kind == EntryKind::Directory)
    );
    assert!(entries.iter().any(|entry| entry.path == UNICODE_NAME));
    assert!(entries.iter().any(|entry| entry.kind
        == EntryKind::Symlink {
            target: "config/settings.json".to_owned()
        }));
    assert!(!scratch.target().exists());

    let zip = scratch.write_archive("p.zip", &normal_zip());
    let entries = cuttle_archive::inspect(&zip, ArchiveFormat::Zip, &Limits::default()).unwrap();
    assert_eq!(entries.len(), 6);
}

#[test]
fn formats_are_recognized_from_file_names() {
    let cases = [
        ("Deploy.1.0.0.zip", Some(ArchiveFormat::Zip)),
        ("Deploy.1.0.0.NUPKG", Some(ArchiveFormat::Zip)),
        ("app.jar", Some(ArchiveFormat::Zip)),
        ("app.war", Some(ArchiveFormat::Zip)),
        ("app.ear", Some(ArchiveFormat::Zip)),
        ("app.tar", Some(ArchiveFormat::Tar)),
        ("app.tar.gz", Some(ArchiveFormat::TarGz)),
        ("app.tgz", Some(ArchiveFormat::TarGz)),
        ("app.tar.bz2", Some(ArchiveFormat::TarBz2)),
        ("app.tbz2", Some(ArchiveFormat::TarBz2)),
        ("app.txt", None),
        ("app.gz", None),
    ];
    for (name, expected) in cases {
        assert_eq!(ArchiveFormat::from_file_name(name), expected, "{name}");
    }
}

#[test]
fn formats_are_recognized_from_their_first_bytes() {
    let tar = normal_tar();
    assert_eq!(
        ArchiveFormat::sniff(&normal_zip()),
        Some(ArchiveFormat::Zip)
    );
    assert_eq!(ArchiveFormat::sniff(&tar), Some(ArchiveFormat::Tar));
    assert_eq!(
        ArchiveFormat::sniff(&gzip(&tar)),
        Some(ArchiveFormat::TarGz)
    );
    assert_eq!(
        ArchiveFormat::sniff(&bzip2(&tar)),
        Some(ArchiveFormat::TarBz2)
    );
    assert_eq!(ArchiveFormat::sniff(b"<html>not a package</html>"), None);
    assert_eq!(ArchiveFormat::sniff(b""), None);
}

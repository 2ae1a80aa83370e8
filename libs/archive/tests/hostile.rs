//! The hostile corpus: one test per rule of "an archive is never extracted outside its target
//! directory". Every archive is built here, in memory, with raw byte surgery where the writing
//! crates refuse to produce such entries. Every refusal also checks all-or-nothing: no target and
//! no staging directory are left behind.

#![allow(clippy::unwrap_used)]

mod support;

use cuttle_archive::{ArchiveFormat, ExtractError, Limits};
use support::*;

// ---- Names -------------------------------------------------------------------------------------

#[test]
fn a_zip_entry_with_dot_dot_is_refused_and_nothing_is_left() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("ok.txt", b"fine"), ("../evil.txt", b"pwned")]);
    let reason =
        assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert!(reason.contains(".."), "{reason}");
    scratch.assert_nothing_left();
    assert!(!scratch.dir.path().join("evil.txt").exists());
}

#[test]
fn a_tar_entry_with_dot_dot_in_the_middle_is_refused_and_nothing_is_left() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_file("app/ok.txt", b"fine"),
        tar_file("app/../../evil.txt", b"x"),
    ]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn an_absolute_zip_entry_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("/etc/cuttle-evil", b"x")]);
    let reason =
        assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert!(reason.contains("absolute"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn an_absolute_tar_entry_is_refused() {
    let scratch = Scratch::new();
    let outside = tempfile::tempdir().unwrap();
    let evil = outside.path().join("evil.txt");
    let tar = tar_bytes(&[tar_file(evil.to_str().unwrap(), b"x")]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
    assert!(!evil.exists());
}

#[test]
fn a_windows_drive_prefix_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("C:\\Windows\\evil.dll", b"x")]);
    let reason =
        assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert!(reason.contains("drive"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_backslash_traversal_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("app\\..\\..\\evil.txt", b"x")]);
    assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn a_unc_path_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("\\\\server\\share\\evil.txt", b"x")]);
    assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn an_empty_entry_name_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("ok.txt", b"fine"), ("", b"nameless")]);
    let reason =
        assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert!(reason.contains("empty"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_nul_byte_in_a_zip_name_is_refused() {
    let scratch = Scratch::new();
    // Written as `aXb.txt`, then the X becomes NUL in both headers: some tools would stop
    // reading the name at the NUL and extract `a`.
    let mut zip = zip_files(&[("aXb.txt", b"x")]);
    assert_eq!(replace_bytes(&mut zip, b"aXb.txt", b"a\0b.txt"), 2);
    let reason =
        assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert!(reason.contains("NUL"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_pax_header_that_renames_an_entry_to_dot_dot_is_refused() {
    let scratch = Scratch::new();
    // The ustar name looks harmless; the pax `path` record, which readers prefer, does not.
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("path", b"../evil.txt".as_slice())])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("innocent.txt").unwrap();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, b"x".as_slice()).unwrap();
    let tar = builder.into_inner().unwrap();
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.starts_with("../evil.txt"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_file_named_as_the_target_itself_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[tar_file("./", b"x")]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
}

// ---- Symbolic links ----------------------------------------------------------------------------

#[test]
fn a_symlink_to_an_absolute_path_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[tar_symlink("etc", "/etc")]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("absolute"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_tar_symlink_climbing_out_with_dot_dot_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[tar_directory("app/"), tar_symlink("app/up", "../../other")]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("outside"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_zip_symlink_climbing_out_with_dot_dot_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_bytes(&[ZipItem::Symlink {
        name: "escape",
        target: "..",
    }]);
    assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn a_symlink_to_an_outside_directory_followed_by_a_file_through_it_is_refused() {
    let scratch = Scratch::new();
    let outside = tempfile::tempdir().unwrap();
    let tar = tar_bytes(&[
        tar_symlink("a", outside.path().to_str().unwrap()),
        tar_file("a/evil", b"pwned"),
    ]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
    assert!(!outside.path().join("evil").exists());
}

#[test]
fn a_symlink_to_dot_dot_followed_by_a_file_through_it_is_refused() {
    let scratch = Scratch::new();
    let zip = zip_bytes(&[
        ZipItem::Symlink {
            name: "a",
            target: "..",
        },
        ZipItem::File {
            name: "a/evil",
            mode: 0o644,
            data: b"pwned",
        },
    ]);
    assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    scratch.assert_nothing_left();
    assert!(!scratch.dir.path().join("evil").exists());
}

#[test]
fn a_file_is_never_written_through_a_symlink_even_one_pointing_inside() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_directory("real/"),
        tar_symlink("alias", "real"),
        tar_file("alias/file.txt", b"through the link"),
    ]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("symbolic link"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_chain_of_symlinks_that_escapes_only_when_followed_is_refused() {
    let scratch = Scratch::new();
    // `d/up -> ..` is the root, and `l -> d/up/..` looks like `d/..` = the root too, but the
    // kernel follows `d/up` first and then climbs above the root.
    let tar = tar_bytes(&[
        tar_directory("d/"),
        tar_symlink("d/up", ".."),
        tar_symlink("l", "d/up/.."),
    ]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.starts_with("l:"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_symlink_loop_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[tar_symlink("a", "b/x"), tar_symlink("b", "a/y")]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("too many"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn symlinks_that_stay_inside_are_extracted() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_directory("lib/v1/"),
        tar_file("lib/v1/run.sh", b"#!/bin/sh\n"),
        tar_symlink("lib/current", "v1"),
        tar_symlink("run.sh", "lib/current/run.sh"),
        tar_symlink("self", "."),
    ]);
    let extracted = scratch
        .extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default())
        .unwrap();
    assert_eq!(extracted.symlinks, 3);
    let target = scratch.target();
    assert_eq!(
        std::fs::read_link(target.join("lib/current"))
            .unwrap()
            .to_str(),
        Some("v1")
    );
    assert_eq!(
        std::fs::read(target.join("run.sh")).unwrap(),
        b"#!/bin/sh\n"
    );
}

// ---- Hard links --------------------------------------------------------------------------------

#[test]
fn a_hard_link_to_a_file_outside_is_refused() {
    let scratch = Scratch::new();
    let outside = tempfile::NamedTempFile::new().unwrap();
    let tar = tar_bytes(&[tar_hard_link("passwd", outside.path().to_str().unwrap())]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn a_hard_link_climbing_out_with_dot_dot_is_refused() {
    let scratch = Scratch::new();
    std::fs::write(scratch.dir.path().join("secret.txt"), b"secret").unwrap();
    let tar = tar_bytes(&[tar_hard_link("copy", "../secret.txt")]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(!scratch.target().exists());
}

#[test]
fn a_hard_link_to_a_file_not_extracted_yet_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_hard_link("early", "later.txt"),
        tar_file("later.txt", b"x"),
    ]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("earlier"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_hard_link_to_a_symlink_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_symlink("link", "file.txt"),
        tar_file("file.txt", b"x"),
        tar_hard_link("hard", "link"),
    ]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("not a regular file"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_hard_link_to_an_earlier_file_is_extracted() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_file("bin/tool", b"binary"),
        tar_hard_link("bin/tool-alias", "bin/tool"),
    ]);
    let extracted = scratch
        .extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default())
        .unwrap();
    assert_eq!(extracted.files, 2);
    assert_eq!(
        std::fs::read(scratch.target().join("bin/tool-alias")).unwrap(),
        b"binary"
    );
}

// ---- Special files -----------------------------------------------------------------------------

#[test]
fn a_tar_device_file_is_refused() {
    let scratch = Scratch::new();
    for kind in [tar::EntryType::Char, tar::EntryType::Block] {
        let tar = tar_bytes(&[TarItem {
            name: b"dev/sda",
            kind,
            mode: 0o666,
            link: b"",
            data: b"",
        }]);
        let reason =
            assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
        assert!(reason.contains("device"), "{reason}");
        scratch.assert_nothing_left();
    }
}

#[test]
fn a_tar_fifo_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[TarItem {
        name: b"pipe",
        kind: tar::EntryType::Fifo,
        mode: 0o644,
        link: b"",
        data: b"",
    }]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("FIFO"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn zip_entries_marked_as_devices_fifos_or_sockets_are_refused() {
    let scratch = Scratch::new();
    for (file_type, word) in [
        (0o020_000, "character device"),
        (0o060_000, "block device"),
        (0o010_000, "FIFO"),
        (0o140_000, "socket"),
    ] {
        let mut zip = zip_files(&[("special", b"")]);
        set_zip_unix_modes(&mut zip, file_type | 0o644);
        let reason =
            assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
        assert!(reason.contains(word), "{reason}");
        scratch.assert_nothing_left();
    }
}

// ---- Limits ------------------------------------------------------------------------------------

/// A zip holding `n_bytes` of zeros, which deflate shrinks about a thousandfold.
fn zip_of_zeros(n_bytes: usize) -> Vec<u8> {
    zip_files(&[("zeros.bin", &vec![0u8; n_bytes])])
}

#[test]
fn a_zip_bomb_over_the_total_size_limit_is_refused_while_streaming() {
    let scratch = Scratch::new();
    let limits = Limits {
        max_total_bytes: 10 << 20,
        ..Limits::default()
    };
    let zip = zip_of_zeros(50 << 20);
    let what = assert_limit(scratch.extract("bomb.zip", &zip, ArchiveFormat::Zip, &limits));
    assert!(what.contains("larger than the limit"), "{what}");
    scratch.assert_nothing_left();
}

#[test]
fn a_zip_bomb_over_the_compression_ratio_is_refused_with_default_limits() {
    let scratch = Scratch::new();
    let zip = zip_of_zeros(50 << 20);
    let what =
        assert_limit(scratch.extract("bomb.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert!(what.contains("times its own size"), "{what}");
    scratch.assert_nothing_left();
}

#[test]
fn a_tar_gz_bomb_is_refused_by_the_compression_ratio() {
    let scratch = Scratch::new();
    let zeros = vec![0u8; 30 << 20];
    let tgz = gzip(&tar_bytes(&[tar_file("zeros.bin", &zeros)]));
    let what = assert_limit(scratch.extract(
        "bomb.tar.gz",
        &tgz,
        ArchiveFormat::TarGz,
        &Limits::default(),
    ));
    assert!(what.contains("times its own size"), "{what}");
    scratch.assert_nothing_left();
}

#[test]
fn a_zip_that_understates_an_entry_size_is_caught_by_counting_bytes() {
    let scratch = Scratch::new();
    let limits = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    let data = vec![b'a'; 5000];
    let mut zip = zip_files(&[("big.txt", &data)]);
    // The declared uncompressed size (5000 = 0x1388) becomes 100 in both headers.
    let declared = 5000u32.to_le_bytes();
    assert!(replace_bytes(&mut zip, &declared, &100u32.to_le_bytes()) >= 2);
    let result = scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &limits);
    assert!(
        matches!(
            result,
            Err(ExtractError::LimitExceeded { .. } | ExtractError::Corrupt(_))
        ),
        "{result:?}"
    );
    scratch.assert_nothing_left();
}

#[test]
fn a_file_over_the_per_file_limit_is_refused() {
    let scratch = Scratch::new();
    let limits = Limits {
        max_file_bytes: 1000,
        ..Limits::default()
    };
    let tar = tar_bytes(&[
        tar_file("small.txt", b"ok"),
        tar_file("big.bin", &[7u8; 1001]),
    ]);
    let what = assert_limit(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &limits));
    assert!(
        what.contains("big.bin") && what.contains("per-file"),
        "{what}"
    );
    scratch.assert_nothing_left();
}

#[test]
fn too_many_entries_are_refused() {
    let scratch = Scratch::new();
    let limits = Limits {
        max_files: 10,
        ..Limits::default()
    };
    let names: Vec<String> = (0..20).map(|index| format!("file-{index}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(|name| (name.as_str(), b"x".as_slice()))
        .collect();
    let zip = zip_files(&files);
    let what = assert_limit(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &limits));
    assert!(what.contains("entries"), "{what}");
    scratch.assert_nothing_left();

    let items: Vec<TarItem<'_>> = names.iter().map(|name| tar_file(name, b"x")).collect();
    let tar = tar_bytes(&items);
    assert_limit(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &limits));
    scratch.assert_nothing_left();
}

#[test]
fn directories_implied_by_deep_paths_count_as_entries() {
    let scratch = Scratch::new();
    let limits = Limits {
        max_files: 10,
        ..Limits::default()
    };
    let deep = (0..20)
        .map(|index| format!("d{index}"))
        .collect::<Vec<_>>()
        .join("/")
        + "/f";
    let tar = tar_bytes(&[tar_file(&deep, b"x")]);
    assert_limit(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &limits));
    scratch.assert_nothing_left();
}

// ---- Modes -------------------------------------------------------------------------------------

#[test]
fn setuid_setgid_sticky_and_group_or_world_write_bits_are_dropped_but_execute_is_kept() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        TarItem {
            name: b"suid.sh",
            kind: tar::EntryType::Regular,
            mode: 0o6777,
            link: b"",
            data: b"#!/bin/sh\n",
        },
        TarItem {
            name: b"unreadable.txt",
            kind: tar::EntryType::Regular,
            mode: 0o000,
            link: b"",
            data: b"x",
        },
        TarItem {
            name: b"sticky/",
            kind: tar::EntryType::Directory,
            mode: 0o1777,
            link: b"",
            data: b"",
        },
        TarItem {
            name: b"locked/",
            kind: tar::EntryType::Directory,
            mode: 0o500,
            link: b"",
            data: b"",
        },
        // A read-only directory is still filled: its mode is applied at the end.
        tar_file("locked/inside.txt", b"x"),
    ]);
    scratch
        .extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default())
        .unwrap();
    let target = scratch.target();
    assert_eq!(mode_of(&target.join("suid.sh")), 0o755);
    assert_eq!(mode_of(&target.join("unreadable.txt")), 0o600);
    assert_eq!(mode_of(&target.join("sticky")), 0o755);
    assert_eq!(mode_of(&target.join("locked")), 0o700);
    assert!(target.join("locked/inside.txt").exists());
}

#[test]
fn a_setuid_zip_entry_keeps_only_its_safe_bits() {
    let scratch = Scratch::new();
    let mut zip = zip_files(&[("tool", b"binary")]);
    set_zip_unix_modes(&mut zip, 0o100_000 | 0o4777);
    scratch
        .extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default())
        .unwrap();
    assert_eq!(mode_of(&scratch.target().join("tool")), 0o755);
}

// ---- Duplicates and conflicts ------------------------------------------------------------------

#[test]
fn a_zip_with_the_same_entry_twice_is_refused() {
    let scratch = Scratch::new();
    // The zip writer refuses duplicates, so `b.txt` is renamed to `a.txt` afterwards.
    let mut zip = zip_files(&[("a.txt", b"first"), ("b.txt", b"second")]);
    assert_eq!(replace_bytes(&mut zip, b"b.txt", b"a.txt"), 2);
    assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn a_tar_with_the_same_path_twice_is_refused_even_when_spelled_differently() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_file("app/a.txt", b"first"),
        tar_file("./app//a.txt", b"second"),
    ]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("already contains"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_file_under_a_path_that_is_a_file_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_file("config", b"a file"),
        tar_file("config/app.json", b"{}"),
    ]);
    let reason =
        assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    assert!(reason.contains("is a file"), "{reason}");
    scratch.assert_nothing_left();
}

#[test]
fn a_file_replacing_a_directory_is_refused() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_file("config/app.json", b"{}"),
        tar_file("config", b"a file"),
    ]);
    assert_unsafe(scratch.extract("p.tar", &tar, ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
}

// ---- Corrupt and mislabeled files --------------------------------------------------------------

#[test]
fn a_truncated_zip_is_corrupt() {
    let scratch = Scratch::new();
    let zip = zip_files(&[("a.txt", &[b'a'; 10_000]), ("b.txt", &[b'b'; 10_000])]);
    let message = assert_corrupt(scratch.extract(
        "p.zip",
        &zip[..zip.len() / 2],
        ArchiveFormat::Zip,
        &Limits::default(),
    ));
    assert!(!message.is_empty());
    scratch.assert_nothing_left();
}

#[test]
fn a_zip_with_a_damaged_entry_is_corrupt() {
    let scratch = Scratch::new();
    let data: Vec<u8> = (0..20_000u32).map(|index| (index % 251) as u8).collect();
    let mut zip = zip_files(&[("data.bin", &data)]);
    // Flip bytes in the middle of the compressed data: the CRC (or inflate) catches it.
    let middle = zip.len() / 3;
    for byte in &mut zip[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    assert_corrupt(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    scratch.assert_nothing_left();
}

#[test]
fn a_tar_truncated_inside_an_entry_is_corrupt() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[tar_file("a.bin", &[1u8; 4096])]);
    assert_corrupt(scratch.extract(
        "p.tar",
        &tar[..512 + 1000],
        ArchiveFormat::Tar,
        &Limits::default(),
    ));
    scratch.assert_nothing_left();
}

#[test]
fn a_tar_truncated_between_entries_is_corrupt() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[tar_file("a.txt", b"a"), tar_file("b.txt", b"b")]);
    // Header and one data block of the first entry: a clean cut without the end marker.
    let message = assert_corrupt(scratch.extract(
        "p.tar",
        &tar[..1024],
        ArchiveFormat::Tar,
        &Limits::default(),
    ));
    assert!(message.contains("truncated"), "{message}");
    scratch.assert_nothing_left();
}

#[test]
fn a_truncated_tar_gz_is_corrupt() {
    let scratch = Scratch::new();
    let data: Vec<u8> = (0..100_000u32)
        .map(|index| (index * 7 % 253) as u8)
        .collect();
    let tgz = gzip(&tar_bytes(&[tar_file("a.bin", &data)]));
    assert_corrupt(scratch.extract(
        "p.tar.gz",
        &tgz[..tgz.len() / 2],
        ArchiveFormat::TarGz,
        &Limits::default(),
    ));
    scratch.assert_nothing_left();
    // Cut only the gzip trailer (CRC and size): the tar inside is complete, the stream is not.
    assert_corrupt(scratch.extract(
        "p.tar.gz",
        &tgz[..tgz.len() - 4],
        ArchiveFormat::TarGz,
        &Limits::default(),
    ));
    scratch.assert_nothing_left();
}

#[test]
fn a_truncated_tar_bz2_is_corrupt() {
    let scratch = Scratch::new();
    let data: Vec<u8> = (0..100_000u32)
        .map(|index| (index * 7 % 253) as u8)
        .collect();
    let tbz = bzip2(&tar_bytes(&[tar_file("a.bin", &data)]));
    assert_corrupt(scratch.extract(
        "p.tar.bz2",
        &tbz[..tbz.len() / 2],
        ArchiveFormat::TarBz2,
        &Limits::default(),
    ));
    scratch.assert_nothing_left();
}

#[test]
fn a_text_file_named_zip_is_refused_as_corrupt() {
    let scratch = Scratch::new();
    let text = b"<html><body>404 Not Found</body></html>\n";
    for (file_name, format) in [
        ("p.zip", ArchiveFormat::Zip),
        ("p.nupkg", ArchiveFormat::Zip),
        ("p.tar.gz", ArchiveFormat::TarGz),
        ("p.tar.bz2", ArchiveFormat::TarBz2),
        ("p.tar", ArchiveFormat::Tar),
    ] {
        assert_corrupt(scratch.extract(file_name, text, format, &Limits::default()));
        scratch.assert_nothing_left();
    }
}

#[test]
fn an_archive_of_another_format_than_named_is_refused() {
    let scratch = Scratch::new();
    let tgz = gzip(&tar_bytes(&[tar_file("a.txt", b"a")]));
    let message =
        assert_corrupt(scratch.extract("p.zip", &tgz, ArchiveFormat::Zip, &Limits::default()));
    assert!(message.contains("tar.gz"), "{message}");
    scratch.assert_nothing_left();
}

#[test]
fn an_empty_file_is_corrupt() {
    let scratch = Scratch::new();
    assert_corrupt(scratch.extract("p.tar", b"", ArchiveFormat::Tar, &Limits::default()));
    scratch.assert_nothing_left();
}

// ---- Target directory and inspection -----------------------------------------------------------

#[test]
fn a_target_that_is_not_empty_is_refused_and_left_alone() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.target()).unwrap();
    std::fs::write(scratch.target().join("previous.txt"), b"keep me").unwrap();
    let zip = zip_files(&[("a.txt", b"a")]);
    let result = scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default());
    assert!(
        matches!(result, Err(ExtractError::TargetNotEmpty(_))),
        "{result:?}"
    );
    assert_eq!(
        std::fs::read(scratch.target().join("previous.txt")).unwrap(),
        b"keep me"
    );
    assert!(!scratch.target().join("a.txt").exists());
}

#[test]
fn a_failed_extraction_into_an_empty_target_leaves_it_empty() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.target()).unwrap();
    let zip = zip_files(&[("ok.txt", b"fine"), ("../evil.txt", b"x")]);
    assert_unsafe(scratch.extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default()));
    assert_eq!(std::fs::read_dir(scratch.target()).unwrap().count(), 0);
}

#[test]
fn inspect_refuses_what_extract_refuses_without_writing() {
    let scratch = Scratch::new();
    let tar = tar_bytes(&[
        tar_directory("d/"),
        tar_symlink("d/up", ".."),
        tar_symlink("l", "d/up/.."),
    ]);
    let archive = scratch.write_archive("p.tar", &tar);
    let result = cuttle_archive::inspect(&archive, ArchiveFormat::Tar, &Limits::default());
    assert!(
        matches!(result, Err(ExtractError::Unsafe { .. })),
        "{result:?}"
    );

    let bomb = scratch.write_archive("bomb.zip", &zip_of_zeros(50 << 20));
    let result = cuttle_archive::inspect(&bomb, ArchiveFormat::Zip, &Limits::default());
    assert!(
        matches!(result, Err(ExtractError::LimitExceeded { .. })),
        "{result:?}"
    );
    scratch.assert_nothing_left();
}

#[test]
fn error_messages_name_the_entry_and_escape_control_characters() {
    let scratch = Scratch::new();
    let mut zip = zip_files(&[("aXb.txt", b"x")]);
    replace_bytes(&mut zip, b"aXb.txt", b"a\0b.txt");
    let error = scratch
        .extract("p.zip", &zip, ArchiveFormat::Zip, &Limits::default())
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("a\\u{0}b.txt") && !message.contains('\0'),
        "{message}"
    );
}

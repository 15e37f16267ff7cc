//! Hostile layers: every way a tar stream can try to write outside the directory it is applied
//! to. Each case asserts the error and that nothing outside the target changed; the same cases
//! run through `apply_layer_to_snapshot` on both drivers.

mod common;

use std::fs;
use std::path::Path;

use common::{E, need_root, raw_tar};
use kiln_snapshotter::{DriverChoice, Error, apply_layer, apply_layer_to_snapshot, open};

/// An outer directory holding `target/` and a `victim` file, with a fingerprint of its state.
struct Jail {
    outer: tempfile::TempDir,
}

impl Jail {
    fn new() -> Self {
        let outer = tempfile::tempdir().unwrap();
        fs::create_dir(outer.path().join("target")).unwrap();
        fs::write(outer.path().join("victim"), b"original").unwrap();
        Self { outer }
    }
    fn target(&self) -> std::path::PathBuf {
        self.outer.path().join("target")
    }
    fn outer(&self) -> &Path {
        self.outer.path()
    }
    /// Asserts nothing but `target/` and the untouched `victim` exist outside the target.
    fn assert_untouched(&self) {
        let mut names: Vec<String> = fs::read_dir(self.outer())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["target", "victim"],
            "something was written outside the target"
        );
        assert_eq!(fs::read(self.outer().join("victim")).unwrap(), b"original");
        let m = fs::metadata(self.outer().join("victim")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&m),
            1,
            "victim got hard-linked"
        );
        assert!(!Path::new("/victim-kiln-test").exists());
    }
}

fn expect_hostile(
    r: kiln_snapshotter::Result<kiln_snapshotter::AppliedLayer>,
    entry: &str,
    reason: &str,
) {
    match r {
        Err(Error::HostileEntry {
            entry: e,
            reason: why,
        }) => {
            assert_eq!(e, entry);
            assert!(why.contains(reason), "reason `{why}` lacks `{reason}`");
        }
        other => panic!("expected a hostile-entry error for `{entry}`, got {other:?}"),
    }
}

#[test]
fn dotdot_path_is_refused() {
    let j = Jail::new();
    let r = apply_layer(&raw_tar(&[E::File("../victim", b"pwned")])[..], &j.target());
    expect_hostile(r, "../victim", "`..`");
    let r = apply_layer(
        &raw_tar(&[E::File("a/../../victim", b"pwned")])[..],
        &j.target(),
    );
    expect_hostile(r, "a/../../victim", "`..`");
    j.assert_untouched();
}

#[test]
fn absolute_path_is_refused() {
    let j = Jail::new();
    let victim = j.outer().join("victim");
    let name = victim.to_str().unwrap().to_string();
    let r = apply_layer(&raw_tar(&[E::File(&name, b"pwned")])[..], &j.target());
    expect_hostile(r, &name, "absolute");
    let r = apply_layer(
        &raw_tar(&[E::File("/victim-kiln-test", b"pwned")])[..],
        &j.target(),
    );
    expect_hostile(r, "/victim-kiln-test", "absolute");
    j.assert_untouched();
}

#[test]
fn symlinked_parent_escaping_is_refused() {
    let j = Jail::new();
    let r = apply_layer(
        &raw_tar(&[
            E::Symlink("evil", "../.."),
            E::File("evil/victim", b"pwned"),
        ])[..],
        &j.target(),
    );
    expect_hostile(r, "evil/victim", "leads outside the root");
    // Chained: a symlink to a symlink that climbs out.
    let r = apply_layer(
        &raw_tar(&[
            E::Dir("d/"),
            E::Symlink("d/up", ".."),
            E::Symlink("hop", "d/up/d/up/.."),
            E::File("hop/victim", b"pwned"),
        ])[..],
        &j.target(),
    );
    expect_hostile(r, "hop/victim", "leads outside the root");
    j.assert_untouched();
}

#[test]
fn a_parent_directory_replaced_by_a_symlink_is_resolved_again() {
    // The applier remembers resolved parents: a directory replaced by a symlink later in the
    // stream must be walked again, so the symlink is checked (and followed inside the root).
    let j = Jail::new();
    let r = apply_layer(
        &raw_tar(&[
            E::Dir("d/"),
            E::File("d/a", b"first"),
            E::Symlink("d", ".."),
            E::File("d/victim", b"pwned"),
        ])[..],
        &j.target(),
    );
    expect_hostile(r, "d/victim", "leads outside the root");
    j.assert_untouched();
    let j = Jail::new();
    apply_layer(
        &raw_tar(&[
            E::Dir("e/"),
            E::File("e/a", b"first"),
            E::Dir("sub/"),
            E::Symlink("e", "sub"),
            E::File("e/b", b"through the link"),
        ])[..],
        &j.target(),
    )
    .unwrap();
    assert_eq!(
        fs::read(j.target().join("sub/b")).unwrap(),
        b"through the link"
    );
    assert!(!j.target().join("sub/a").exists());
    j.assert_untouched();
}

#[test]
fn absolute_symlink_parent_stays_inside() {
    // An absolute symlink means the container's root, never the host's: contained, not refused.
    let j = Jail::new();
    let outer = j.outer().to_str().unwrap().to_string();
    apply_layer(
        &raw_tar(&[
            E::Symlink("abs", &outer),
            E::File("abs/victim", b"contained"),
        ])[..],
        &j.target(),
    )
    .unwrap();
    let inside = j
        .target()
        .join(outer.trim_start_matches('/'))
        .join("victim");
    assert_eq!(fs::read(inside).unwrap(), b"contained");
    j.assert_untouched();
}

#[test]
fn hardlink_outside_is_refused() {
    let j = Jail::new();
    let r = apply_layer(&raw_tar(&[E::Hardlink("h", "../victim")])[..], &j.target());
    expect_hostile(r, "h", "hard link target");
    let outer = j.outer().to_str().unwrap().to_string();
    let victim = format!("{outer}/victim");
    let r = apply_layer(&raw_tar(&[E::Hardlink("h", &victim)])[..], &j.target());
    expect_hostile(r, "h", "hard link target");
    // Through a symlinked parent: resolved inside the root, where no such file exists.
    let r = apply_layer(
        &raw_tar(&[E::Symlink("s", &outer), E::Hardlink("h", "s/victim")])[..],
        &j.target(),
    );
    assert!(
        matches!(&r, Err(Error::InvalidLayer { reason, .. }) if reason.contains("does not exist")),
        "{r:?}"
    );
    let r = apply_layer(
        &raw_tar(&[E::Symlink("t", "../.."), E::Hardlink("h", "t/victim")])[..],
        &j.target(),
    );
    expect_hostile(r, "h", "leads outside the root");
    j.assert_untouched();
}

#[test]
fn whiteout_of_dotdot_is_refused() {
    let j = Jail::new();
    fs::create_dir(j.target().join("sub")).unwrap();
    let r = apply_layer(&raw_tar(&[E::File("sub/.wh..", b"")])[..], &j.target());
    expect_hostile(r, "sub/.wh..", "whiteout of");
    let r = apply_layer(&raw_tar(&[E::File(".wh..", b"")])[..], &j.target());
    expect_hostile(r, ".wh..", "whiteout of");
    let r = apply_layer(&raw_tar(&[E::File("../.wh.victim", b"")])[..], &j.target());
    expect_hostile(r, "../.wh.victim", "`..`");
    assert!(j.target().join("sub").is_dir());
    j.assert_untouched();
}

#[test]
fn final_symlink_is_replaced_not_followed() {
    let j = Jail::new();
    let victim = j.outer().join("victim");
    let outer = j.outer().to_str().unwrap().to_string();
    apply_layer(
        &raw_tar(&[
            E::Symlink("x", victim.to_str().unwrap()),
            E::File("x", b"replaced"),
            E::Symlink("d", &outer),
            E::Dir("d/"),
            E::File("d/victim", b"in a new dir"),
        ])[..],
        &j.target(),
    )
    .unwrap();
    assert_eq!(fs::read(j.target().join("x")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(j.target().join("d")).unwrap().is_dir());
    j.assert_untouched();
}

#[test]
fn hostile_layers_into_snapshots() {
    if !need_root("hostile layers into snapshots") {
        return;
    }
    for driver in [DriverChoice::Overlay, DriverChoice::Native] {
        let j = Jail::new();
        let s = open(&j.target(), driver).unwrap();
        s.prepare("base", None).unwrap();
        let base = raw_tar(&[E::Dir("d/"), E::Symlink("lowlink", "../../../../..")]);
        apply_layer_to_snapshot(s.as_ref(), "base", &base[..]).unwrap();
        s.commit("base-c", "base").unwrap();
        s.prepare("k", Some("base-c")).unwrap();
        for (tar, entry) in [
            (
                raw_tar(&[E::File("../../../../victim", b"x")]),
                "../../../../victim",
            ),
            (
                raw_tar(&[E::Symlink("e", "../../../../.."), E::File("e/victim", b"x")]),
                "e/victim",
            ),
            (raw_tar(&[E::Hardlink("h", "../../../../victim")]), "h"),
            (raw_tar(&[E::File("d/.wh..", b"")]), "d/.wh.."),
            // The escaping symlink lives in the lower (committed) layer.
            (
                raw_tar(&[E::File("lowlink/victim", b"x")]),
                "lowlink/victim",
            ),
        ] {
            let r = apply_layer_to_snapshot(s.as_ref(), "k", &tar[..]);
            assert!(
                matches!(&r, Err(Error::HostileEntry { entry: e, .. }) if e == entry),
                "{driver:?}: {r:?}"
            );
        }
        let mut names: Vec<String> = fs::read_dir(j.outer())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["target", "victim"]);
        assert_eq!(fs::read(j.outer().join("victim")).unwrap(), b"original");
    }
}

#[test]
fn whiteout_under_missing_or_file_parent_is_a_no_op() {
    let j = Jail::new();
    fs::write(j.target().join("file"), b"f").unwrap();
    apply_layer(
        &raw_tar(&[
            E::File("x/y/.wh.z", b""),
            E::File("file/.wh.q", b""),
            E::File("m/.wh..wh..opq", b""),
        ])[..],
        &j.target(),
    )
    .unwrap();
    assert!(
        !j.target().join("x").exists(),
        "a whiteout created its parent"
    );
    assert!(!j.target().join("m").exists());
    assert_eq!(fs::read(j.target().join("file")).unwrap(), b"f");
    j.assert_untouched();
}

#[test]
fn directory_recreated_over_overlay_whiteout_hides_lower_contents() {
    if !need_root("overlay whiteout then directory") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let s = open(state.path(), DriverChoice::Overlay).unwrap();
    let layers = [
        raw_tar(&[E::Dir("d/"), E::File("d/old", b"old")]),
        raw_tar(&[E::File(".wh.d", b"")]),
        // `d/` itself is not in the layer: the applier makes it, over the whiteout.
        raw_tar(&[E::File("d/new", b"new")]),
    ];
    let mut parent: Option<String> = None;
    for (i, l) in layers.iter().enumerate() {
        s.prepare(&format!("k{i}"), parent.as_deref()).unwrap();
        apply_layer_to_snapshot(s.as_ref(), &format!("k{i}"), &l[..]).unwrap();
        s.commit(&format!("c{i}"), &format!("k{i}")).unwrap();
        parent = Some(format!("c{i}"));
    }
    let v = kiln_snapshotter::MountedSnapshot::new(&s.mounts("c2").unwrap()).unwrap();
    let mut names: Vec<String> = fs::read_dir(v.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["new"]);
}

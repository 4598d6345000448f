//! The atomic file: replacement, failure, locking, pacing, staging names.

use super::*;

fn file(path: PathBuf) -> AtomicFile {
    AtomicFile::new(path, Duration::ZERO).unwrap()
}

#[test]
fn replaces_atomically_with_mode_0644() {
    let d = tempfile::tempdir().unwrap();
    let mut f = file(d.path().join("sub/coral-nfd"));
    f.write("one\n").unwrap();
    f.write("two\n").unwrap();
    assert_eq!(fs::read_to_string(f.path()).unwrap(), "two\n");
    assert!(f.holds("two\n") && !f.holds("two") && !f.holds("two\n\n"));
    let mode = fs::metadata(f.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // Nothing but the file and the hidden staging directory, which is empty.
    let names: Vec<_> = fs::read_dir(d.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(fs::read_dir(&f.staging).unwrap().count(), 0);
}

#[test]
fn failure_leaves_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    let mut f = file(d.path().join("coral-nfd"));
    f.write("old\n").unwrap();
    drop(f);
    let mut f = file(d.path().join("coral-nfd"));
    fs::remove_dir(&f.staging).unwrap();
    fs::write(&f.staging, "in the way").unwrap();
    let err = f.write("new\n").unwrap_err();
    assert!(err.contains("staging"), "{err}");
    assert_eq!(fs::read_to_string(f.path()).unwrap(), "old\n");
}

#[test]
fn remove_and_clean() {
    let d = tempfile::tempdir().unwrap();
    let mut f = file(d.path().join("coral-nfd"));
    f.write("x\n").unwrap();
    fs::write(f.staging.join("write-stale"), "partial").unwrap();
    f.clean_stale();
    assert_eq!(fs::read_dir(&f.staging).unwrap().count(), 0);
    f.remove().unwrap();
    assert!(!f.path().exists());
    assert!(!f.staging.exists());
    f.remove().unwrap();
}

#[test]
fn staging_names_always_fit() {
    for len in [1, 200, 240, 241, 255] {
        let p = Path::new("/x").join("n".repeat(len));
        let s = staging_path(&p);
        let name = s.file_name().unwrap().as_bytes();
        assert!(name.len() <= NAME_MAX, "{len}: {}", name.len());
        assert!(name.starts_with(b".") && name.ends_with(b".coral-nfd-tmp"));
    }
    // Two long names that share their first 220 bytes still differ.
    let a = staging_path(&Path::new("/x").join(format!("{}a", "n".repeat(250))));
    let b = staging_path(&Path::new("/x").join(format!("{}b", "n".repeat(250))));
    assert_ne!(a, b);
    assert_eq!(
        staging_path(Path::new("/f/coral-nfd")),
        Path::new("/f/.coral-nfd.coral-nfd-tmp")
    );
}

#[test]
fn paths_that_name_no_file_are_refused() {
    for p in ["/", "a/..", ".."] {
        assert!(AtomicFile::new(p, Duration::ZERO).is_err(), "{p}");
    }
}

#[test]
fn a_second_writer_is_locked_out_and_a_dead_one_is_not() {
    let d = tempfile::tempdir().unwrap();
    let mut a = file(d.path().join("coral-nfd"));
    a.prepare().unwrap();
    let mut b = file(d.path().join("coral-nfd"));
    let err = b.prepare().unwrap_err().to_string();
    assert!(err.contains("taken"), "{err}");
    drop(b);
    assert!(
        a.staging.is_dir(),
        "the loser removed the holder's directory"
    );
    drop(a);
    file(d.path().join("coral-nfd")).prepare().unwrap();
}

#[test]
fn pacing_follows_the_last_change() {
    let d = tempfile::tempdir().unwrap();
    let mut f = AtomicFile::new(d.path().join("coral-nfd"), NFD_GAP).unwrap();
    assert_eq!(f.due_in(), Duration::ZERO, "nothing there yet");
    let start = std::time::Instant::now();
    f.prepare().unwrap();
    let due = f.due_in();
    // The staging directory was just created: an event NFD may have read on. The whole
    // gap is owed, less the time this test took to ask (however long a loaded machine
    // made that) and a coarse clock tick of the file's change time.
    assert!(
        due + start.elapsed() + Duration::from_millis(20) >= NFD_GAP,
        "{due:?} due"
    );
}

#[test]
fn remove_touches_nothing_without_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let mut holder = file(d.path().join("coral-nfd"));
    holder.write("theirs\n").unwrap();
    // A second run that could not take the lock must not remove the holder's file.
    let mut other = file(d.path().join("coral-nfd"));
    assert!(other.prepare().is_err());
    other.remove().unwrap();
    assert_eq!(fs::read_to_string(holder.path()).unwrap(), "theirs\n");
    assert!(holder.staging().is_dir());
}

//! The reader's containment and bounds, through both resolvers.

use super::*;
use std::os::unix::fs::symlink;

fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("devices/pci0000:00/0000:00:01.0")).unwrap();
    std::fs::write(p.join("devices/pci0000:00/0000:00:01.0/vendor"), "0x8086\n").unwrap();
    std::fs::create_dir_all(p.join("bus/pci/devices")).unwrap();
    symlink(
        "../../../devices/pci0000:00/0000:00:01.0",
        p.join("bus/pci/devices/0000:00:01.0"),
    )
    .unwrap();
    symlink("../../../../etc", p.join("bus/pci/devices/escape")).unwrap();
    symlink("/etc", p.join("bus/pci/devices/absolute")).unwrap();
    symlink("loop_b", p.join("bus/pci/devices/loop_a")).unwrap();
    symlink("loop_a", p.join("bus/pci/devices/loop_b")).unwrap();
    symlink("nowhere", p.join("bus/pci/devices/dangling")).unwrap();
    std::fs::write(p.join("big"), vec![b'x'; MAX_ATTR_BYTES + 10]).unwrap();
    std::fs::write(p.join("exact"), vec![b'y'; MAX_ATTR_BYTES]).unwrap();
    t
}

fn both(path: &Path) -> [Root; 2] {
    [
        Root::open(path).with_resolver(Resolver::Openat2),
        Root::open(path).with_resolver(Resolver::Walk),
    ]
}

#[test]
fn follows_relative_links_inside_the_root() {
    let t = tree();
    for root in both(t.path()) {
        assert_eq!(
            root.read_attr("bus/pci/devices/0000:00:01.0/vendor")
                .unwrap(),
            b"0x8086\n",
            "{:?}",
            root.resolver()
        );
        assert_eq!(
            root.walk(Path::new("bus/pci/devices/0000:00:01.0"), true)
                .unwrap(),
            PathBuf::from("devices/pci0000:00/0000:00:01.0")
        );
    }
}

#[test]
fn escaping_looping_and_dangling_links_are_refused() {
    let t = tree();
    for root in both(t.path()) {
        let r = root.resolver();
        assert_eq!(
            root.read_attr("bus/pci/devices/escape/passwd"),
            Err(FsError::Escapes),
            "{r:?}"
        );
        assert_eq!(
            root.stat("bus/pci/devices/absolute"),
            Err(FsError::Escapes),
            "{r:?}"
        );
        assert_eq!(
            root.stat("bus/pci/devices/loop_a"),
            Err(FsError::Loop),
            "{r:?}"
        );
        assert_eq!(
            root.stat("bus/pci/devices/dangling"),
            Err(FsError::Missing),
            "{r:?}"
        );
        assert_eq!(
            root.read_attr("../etc/passwd"),
            Err(FsError::Escapes),
            "{r:?}"
        );
    }
}

#[test]
fn reads_are_bounded() {
    let t = tree();
    for root in both(t.path()) {
        assert!(matches!(root.read_attr("big"), Err(FsError::TooLarge(_))));
        assert_eq!(root.read_attr("exact").unwrap().len(), MAX_ATTR_BYTES);
        assert!(matches!(root.read_attr("bus"), Err(FsError::WrongType(_))));
    }
}

#[test]
fn fifo_is_refused_without_blocking() {
    let t = tree();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.path().join("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    for root in both(t.path()) {
        assert!(matches!(root.read_attr("fifo"), Err(FsError::WrongType(_))));
    }
}

#[test]
fn missing_root_is_empty() {
    let root = Root::open("/nonexistent/coral-nfd-test-root");
    assert_eq!(root.read_dir("bus"), Err(FsError::Missing));
    assert_eq!(root.stat("x"), Err(FsError::Missing));
}

#[test]
fn read_dir_is_sorted() {
    let t = tree();
    for root in both(t.path()) {
        let names = root.read_dir("bus/pci/devices").unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 6);
    }
}

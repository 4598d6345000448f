//! Random sysfs-shaped trees: Coral and other PCI functions and USB devices whose
//! attributes hold random bytes, are missing, are directories, FIFOs, character
//! devices, dangling, looping or root-escaping links; odd and non-UTF-8 names. On every
//! tree: no panic, bounded time, and every emitted line valid; doctor, frigate-config
//! and snapshot likewise. A subset also runs the binary (exit 0 in one-shot mode).

use crate::util::*;
use coral_nfd::label::Prefix;
use coral_nfd::root::Root;
use coral_nfd::{doctor, frigate, labeler, render, scan, snapshot};
use proptest::prelude::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What sits where an attribute belongs.
#[derive(Debug, Clone)]
enum Content {
    Bytes(Vec<u8>),
    Missing,
    Dir,
    Fifo,
    /// Behaves like /dev/zero: reading it would never end.
    CharDevice,
    Dangling,
    Loop,
    Escape,
    Huge,
}

fn bytes_like(valid: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(valid).prop_map(|s| format!("{s}\n").into_bytes()),
        1 => Just(Vec::new()),
        1 => Just(b"   \n\t".to_vec()),
        1 => Just(b"0x".to_vec()),
        1 => Just(b"-1\n".to_vec()),
        1 => Just(b"99999999999999999999999999\n".to_vec()),
        1 => Just(b"\x00\x00\x00".to_vec()),
        1 => Just(b"\xff\xfe\xfd\n".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 3000..5000),
    ]
}

fn content(valid: &'static [&'static str]) -> impl Strategy<Value = Content> {
    prop_oneof![
        12 => bytes_like(valid).prop_map(Content::Bytes),
        2 => Just(Content::Missing),
        1 => Just(Content::Dir),
        1 => Just(Content::Fifo),
        1 => Just(Content::CharDevice),
        1 => Just(Content::Dangling),
        1 => Just(Content::Loop),
        1 => Just(Content::Escape),
        1 => Just(Content::Huge),
    ]
}

#[derive(Debug, Clone)]
enum Link {
    Good,
    Missing,
    Dangling,
    Loop,
    Escape,
    Absolute,
    RegularFile,
}

fn link() -> impl Strategy<Value = Link> {
    prop_oneof![
        6 => Just(Link::Good),
        1 => Just(Link::Missing),
        1 => Just(Link::Dangling),
        1 => Just(Link::Loop),
        1 => Just(Link::Escape),
        1 => Just(Link::Absolute),
        1 => Just(Link::RegularFile),
    ]
}

#[derive(Debug, Clone)]
enum NodeKind {
    Missing,
    Right,
    Wrong,
    Regular,
    Fifo,
    Dir,
}

fn node() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        5 => Just(NodeKind::Right),
        1 => Just(NodeKind::Missing),
        1 => Just(NodeKind::Wrong),
        1 => Just(NodeKind::Regular),
        1 => Just(NodeKind::Fifo),
        1 => Just(NodeKind::Dir),
    ]
}

#[derive(Debug, Clone)]
struct Apex {
    /// `None`: `apex_<i>` with i the function's position (unique).
    name: Option<Vec<u8>>,
    dev: Content,
    status: Content,
    temp: Content,
    device: Link,
    node: NodeKind,
}

#[derive(Debug, Clone)]
struct Pci {
    /// `None`: a unique address from the function's position.
    name: Option<Vec<u8>>,
    vendor: Content,
    device: Content,
    driver: Link,
    driver_name: &'static str,
    apex: Option<Apex>,
}

#[derive(Debug, Clone)]
struct Usb {
    name: Vec<u8>,
    vendor: Content,
    product: Content,
    busnum: Content,
    devnum: Content,
    dev: Content,
    speed: Content,
    node: NodeKind,
}

#[derive(Debug, Clone)]
struct Tree {
    pci: Vec<Pci>,
    usb: Vec<Usb>,
    driver_dir: bool,
    version: Content,
    /// `bus/pci/devices` itself: 0 a directory, 1 a regular file, 2 missing.
    enum_kind: u8,
}

fn name(valid: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => valid.prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..20)
            .prop_filter("not . or ..", |v| v != b"." && v != b".."),
    ]
}

fn apex() -> impl Strategy<Value = Apex> {
    (
        proptest::option::of(name((0u32..4).prop_map(|n| format!("apex_{n}")))),
        content(&["120:0", "120:1", "120:2"]),
        content(&["ALIVE", "LAMED", "DEAD"]),
        content(&["49300", "-89700", "86050"]),
        link(),
        node(),
    )
        .prop_map(|(name, dev, status, temp, device, node)| Apex {
            name,
            dev,
            status,
            temp,
            device,
            node,
        })
}

fn pci() -> impl Strategy<Value = Pci> {
    (
        proptest::option::of(name(
            (0u8..4, 0u8..32, 0u8..8).prop_map(|(b, d, f)| format!("0000:{b:02x}:{d:02x}.{f}")),
        )),
        content(&["0x1ac1", "0x8086"]),
        content(&["0x089a", "0x1234"]),
        link(),
        proptest::sample::select(&["apex", "vfio-pci"][..]),
        proptest::option::of(apex()),
    )
        .prop_map(|(name, vendor, device, driver, driver_name, apex)| Pci {
            name,
            vendor,
            device,
            driver,
            driver_name,
            apex,
        })
}

fn ok(s: &str) -> Content {
    Content::Bytes(format!("{s}\n").into_bytes())
}

/// A working Coral function with up to three of its parts broken at random: most
/// trees then hold ready TPUs and near misses, not only garbage.
fn coral_with_faults() -> impl Strategy<Value = Pci> {
    let faults = proptest::collection::vec((0u8..9, content(&["ALIVE"]), link(), node()), 0..3);
    faults.prop_map(|faults| {
        let mut p = Pci {
            name: None,
            vendor: ok("0x1ac1"),
            device: ok("0x089a"),
            driver: Link::Good,
            driver_name: "apex",
            apex: Some(Apex {
                name: None,
                dev: Content::Missing, // filled in at build time from the name
                status: ok("ALIVE"),
                temp: ok("49300"),
                device: Link::Good,
                node: NodeKind::Right,
            }),
        };
        for (what, c, l, n) in faults {
            match (what, p.apex.as_mut()) {
                (0, _) => p.vendor = c,
                (1, _) => p.device = c,
                (2, _) => p.driver = l,
                (3, Some(a)) => a.dev = c,
                (4, Some(a)) => a.status = c,
                (5, Some(a)) => a.temp = c,
                (6, Some(a)) => a.device = l,
                (7, Some(a)) => a.node = n,
                _ => p.apex = None,
            }
        }
        p
    })
}

fn usb() -> impl Strategy<Value = Usb> {
    (
        name((1u8..4, 1u8..5).prop_map(|(b, p)| format!("{b}-{p}"))),
        prop_oneof![2 => Just(ok("18d1")), 1 => Just(ok("1a6e")), 1 => content(&["1a6e", "18d1", "046d"])],
        prop_oneof![2 => Just(ok("9302")), 1 => Just(ok("089a")), 1 => content(&["089a", "9302"])],
        prop_oneof![3 => Just(ok("1")), 1 => content(&["1", "2"])],
        prop_oneof![3 => Just(ok("2")), 1 => content(&["2", "3"])],
        prop_oneof![3 => Just(ok("189:1")), 1 => content(&["189:1", "189:2", "189:129"])],
        content(&["480", "5000", "12"]),
        node(),
    )
        .prop_map(|(name, vendor, product, busnum, devnum, dev, speed, node)| Usb {
            name,
            vendor,
            product,
            busnum,
            devnum,
            dev,
            speed,
            node,
        })
}

fn tree() -> impl Strategy<Value = Tree> {
    (
        proptest::collection::vec(prop_oneof![1 => pci(), 1 => coral_with_faults()], 0..10),
        proptest::collection::vec(usb(), 0..5),
        any::<bool>(),
        content(&["1.2", "1.0", "1.2-rc1+dirty"]),
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(pci, usb, driver_dir, version, enum_kind)| Tree {
            pci,
            usb,
            driver_dir,
            version,
            enum_kind,
        })
}

// --- building a tree on disk -----------------------------------------------------------

fn put(at: &Path, c: &Content) {
    let _ = fs::remove_file(at);
    let _ = fs::remove_dir_all(at);
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    match c {
        Content::Bytes(b) => fs::write(at, b).unwrap(),
        Content::Missing => {}
        Content::Dir => fs::create_dir_all(at).unwrap(),
        Content::Fifo => {
            mknod(at, 'p', 0, 0, 0o644).expect("mkfifo");
        }
        Content::CharDevice => {
            if mknod(at, 'c', 1, 5, 0o644).is_none() {
                // Not root: a FIFO is the next most hostile thing.
                mknod(at, 'p', 0, 0, 0o644).expect("mkfifo");
            }
        }
        Content::Dangling => symlink("does-not-exist", at).unwrap(),
        Content::Loop => symlink(at.file_name().unwrap(), at).unwrap(),
        Content::Escape => {
            symlink("../../../../../../../../../../../../../etc/hostname", at).unwrap()
        }
        Content::Huge => {
            let f = fs::File::create(at).unwrap();
            f.set_len(64 << 20).unwrap(); // sparse: no disk used
        }
    }
}

fn put_link(at: &Path, kind: &Link, good_target: &str) {
    let _ = fs::remove_file(at);
    let _ = fs::remove_dir_all(at);
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    match kind {
        Link::Good => symlink(good_target, at).unwrap(),
        Link::Missing => {}
        Link::Dangling => symlink("nowhere/at/all", at).unwrap(),
        Link::Loop => symlink(at.file_name().unwrap(), at).unwrap(),
        Link::Escape => symlink("../../../../../../../../../../../../../../tmp", at).unwrap(),
        Link::Absolute => symlink("/sys", at).unwrap(),
        Link::RegularFile => fs::write(at, "not a link").unwrap(),
    }
}

fn put_node(at: &Path, kind: &NodeKind, rdev: (u32, u32)) {
    let _ = fs::remove_file(at);
    let _ = fs::remove_dir_all(at);
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    let ok = match kind {
        NodeKind::Missing => Some(()),
        NodeKind::Right => mknod(at, 'c', rdev.0, rdev.1, 0o660),
        NodeKind::Wrong => mknod(at, 'c', rdev.0, rdev.1 + 7, 0o660),
        NodeKind::Regular => fs::write(at, "").ok(),
        NodeKind::Fifo => mknod(at, 'p', 0, 0, 0o644),
        NodeKind::Dir => fs::create_dir_all(at).ok(),
    };
    if ok.is_none() {
        // Not root: leave the node out rather than fail the property.
        eprintln!("*** mknod refused: node {} left out ***", at.display());
    }
}

fn build(t: &Tree, base: &Path) {
    let sys = base.join("sys");
    let dev = base.join("dev");
    fs::create_dir_all(&dev).unwrap();
    let host = sys.join("devices/pci0000:00");
    fs::create_dir_all(&host).unwrap();
    let devices = sys.join("bus/pci/devices");
    match t.enum_kind {
        0 => fs::create_dir_all(&devices).unwrap(),
        1 => put(&devices, &Content::Bytes(b"a file".to_vec())),
        _ => {}
    }
    if t.driver_dir {
        fs::create_dir_all(sys.join("bus/pci/drivers/apex")).unwrap();
    }
    fs::create_dir_all(sys.join("bus/pci/drivers/vfio-pci")).unwrap();
    put(&sys.join("module/apex/version"), &t.version);
    for (i, p) in t.pci.iter().enumerate() {
        let default_name = format!("0000:{:02x}:00.0", 0x10 + i);
        let name = OsStr::from_bytes(p.name.as_deref().unwrap_or(default_name.as_bytes()));
        let dir = host.join(name);
        if dir.exists() {
            continue; // a duplicate name: the first one stays
        }
        fs::create_dir_all(&dir).unwrap();
        put(&dir.join("vendor"), &p.vendor);
        put(&dir.join("device"), &p.device);
        put_link(
            &dir.join("driver"),
            &p.driver,
            &format!("../../../bus/pci/drivers/{}", p.driver_name),
        );
        if t.enum_kind == 0 {
            let _ = symlink(
                Path::new("../../../devices/pci0000:00").join(name),
                devices.join(name),
            );
        }
        if let Some(a) = &p.apex {
            let default_apex = format!("apex_{i}");
            let abytes = a.name.as_deref().unwrap_or(default_apex.as_bytes());
            let aname = OsStr::from_bytes(abytes);
            let adir = dir.join("apex").join(aname);
            if adir.exists() {
                continue;
            }
            fs::create_dir_all(&adir).unwrap();
            let n = abytes
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let minor: u32 = std::str::from_utf8(&abytes[abytes.len() - n..])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match &a.dev {
                Content::Missing if a.name.is_none() => {
                    put(&adir.join("dev"), &ok(&format!("120:{minor}")))
                }
                other => put(&adir.join("dev"), other),
            }
            put(&adir.join("status"), &a.status);
            put(&adir.join("temp"), &a.temp);
            put_link(&adir.join("device"), &a.device, "../..");
            let class = sys.join("class/apex");
            fs::create_dir_all(&class).unwrap();
            let _ = symlink(
                Path::new("../../devices/pci0000:00")
                    .join(name)
                    .join("apex")
                    .join(aname),
                class.join(aname),
            );
            put_node(&dev.join(aname), &a.node, (120, minor));
        }
    }
    let usb_devices = sys.join("bus/usb/devices");
    fs::create_dir_all(&usb_devices).unwrap();
    for u in &t.usb {
        let name = OsStr::from_bytes(&u.name);
        let dir = sys.join("devices/usb").join(name);
        if dir.exists() {
            continue;
        }
        fs::create_dir_all(&dir).unwrap();
        put(&dir.join("idVendor"), &u.vendor);
        put(&dir.join("idProduct"), &u.product);
        put(&dir.join("busnum"), &u.busnum);
        put(&dir.join("devnum"), &u.devnum);
        put(&dir.join("dev"), &u.dev);
        put(&dir.join("speed"), &u.speed);
        let _ = symlink(
            Path::new("../../../devices/usb").join(name),
            usb_devices.join(name),
        );
        let num = |c: &Content| match c {
            Content::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok()),
            _ => None,
        };
        if let (Some(b), Some(d)) = (num(&u.busnum), num(&u.devnum))
            && b < 1000
            && d < 1000
        {
            let minor = match &u.dev {
                Content::Bytes(x) => std::str::from_utf8(x)
                    .ok()
                    .and_then(|s| s.trim().split_once(':').and_then(|(_, m)| m.parse().ok()))
                    .unwrap_or(0),
                _ => 0,
            };
            put_node(
                &dev.join(format!("bus/usb/{b:03}/{d:03}")),
                &u.node,
                (189, minor),
            );
        }
    }
}

// --- the properties ------------------------------------------------------------------

/// What the generated trees covered, so that a generator gone bland fails the test.
#[derive(Default)]
struct Coverage {
    cases: AtomicUsize,
    coral_ready: AtomicUsize,
    coral_not_ready: AtomicUsize,
    usb_coral: AtomicUsize,
    with_warnings: AtomicUsize,
    binary_runs: AtomicUsize,
}

/// Nothing in a snapshot is larger than an attribute, a FIFO or device outside dev/, or
/// a link leaving the snapshot.
fn snapshot_in_bounds(snap: &Path) {
    let mut stack = vec![snap.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let name = e.file_name();
                assert!(
                    e.metadata().unwrap().len() <= 4096
                        || name == "README"
                        || name == "dev.manifest",
                    "{p:?}"
                );
            } else if ft.is_symlink() {
                let target = fs::read_link(&p).unwrap();
                assert!(target.is_relative(), "{p:?} -> {target:?}");
                let depth = p
                    .strip_prefix(snap.join("sys"))
                    .unwrap()
                    .components()
                    .count()
                    - 1;
                let ups = target
                    .components()
                    .take_while(|c| c.as_os_str() == "..")
                    .count();
                assert!(ups <= depth, "{p:?} -> {target:?} leaves the snapshot");
            } else {
                assert!(
                    p.starts_with(snap.join("dev")),
                    "{p:?} is a special file outside dev/"
                );
            }
        }
    }
}

fn check(t: &Tree, cov: &Coverage) -> Result<(), TestCaseError> {
    let case = cov.cases.fetch_add(1, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    build(t, dir.path());
    let (sys_p, dev_p) = (dir.path().join("sys"), dir.path().join("dev"));
    let start = Instant::now();
    let sys = Root::open(&sys_p);
    let dev = Root::open(&dev_p);

    let (body, warnings) = labeler::body(&sys, &dev, &Prefix::default());
    let file = render::render(&body, None);
    parse_nfd(&file).map_err(|e| TestCaseError::fail(format!("{e}\n{file}")))?;
    let counter =
        if body.contains("coral-tpu.pcie.ready.count=0") || !body.contains("pcie.ready.count") {
            &cov.coral_not_ready
        } else {
            &cov.coral_ready
        };
    if body.contains("coral-tpu.pcie.count=") && !body.contains("coral-tpu.pcie.count=0") {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if body.contains("coral-tpu.usb.0.") {
        cov.usb_coral.fetch_add(1, Ordering::Relaxed);
    }
    if !warnings.is_empty() {
        cov.with_warnings.fetch_add(1, Ordering::Relaxed);
    }

    let scan = scan::discover_to(&sys, &dev, scan::Depth::Doctor);
    let searched = doctor::Searched {
        sysfs_root: sys_p.display().to_string(),
        dev_root: dev_p.display().to_string(),
        pci_functions: scan.inventory.pci_scanned,
        usb_devices: scan.inventory.usb_scanned,
    };
    let report = doctor::diagnose(&scan.inventory, searched, scan.warnings.clone());
    serde_json::to_string(&report).unwrap();
    // Every apex_N the labels call not ready has a doctor entry with a cause.
    for line in body.lines().filter(|l| l.ends_with(".ready=false")) {
        let Some(apex) = line
            .split("coral-tpu.")
            .nth(1)
            .and_then(|k| k.strip_suffix(".ready=false"))
            .filter(|a| a.starts_with("apex_"))
        else {
            continue;
        };
        let pcie = report
            .devices
            .iter()
            .filter(|d| d.apex.as_deref() == Some(apex));
        let class = report.class_devices.iter().filter(|c| c.name == apex);
        let findings: Vec<_> = pcie
            .flat_map(|d| d.findings.iter())
            .chain(class.flat_map(|c| c.findings.iter()))
            .filter(|f| f.level == doctor::Level::Problem && !f.remedies.is_empty())
            .collect();
        prop_assert!(!findings.is_empty(), "{} not ready, doctor silent", apex);
    }
    for line in doctor::render_text(&report, false).lines() {
        prop_assert!(line.chars().count() <= 80, "{:?}", line);
    }
    let yaml = frigate::detectors(&scan.inventory).yaml;
    yaml_rust2::YamlLoader::load_from_str(&yaml)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;

    let snap = dir.path().join("snapshot");
    snapshot::snapshot(&sys, &dev, &snap, false).map_err(TestCaseError::fail)?;
    snapshot_in_bounds(&snap);
    // A bound that catches a hang or a runaway walk, not a slow machine (debug build,
    // tests in parallel): the benchmark measures speed.
    prop_assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );

    // Every eighth tree also goes through the binary, with a time limit.
    if case.is_multiple_of(8) {
        cov.binary_runs.fetch_add(1, Ordering::Relaxed);
        let (s, d) = (sys_p.to_str().unwrap(), dev_p.to_str().unwrap());
        let out = run_with_limit(
            &["--sysfs-root", s, "--dev-root", d],
            Duration::from_secs(10),
        );
        prop_assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        parse_nfd(&stdout(&out)).map_err(TestCaseError::fail)?;
        let doc = run_with_limit(
            &["doctor", "--sysfs-root", s, "--dev-root", d],
            Duration::from_secs(10),
        );
        prop_assert!(
            [0, 1, 3].contains(&doc.status.code().unwrap()),
            "{}",
            stderr(&doc)
        );
        let fc = run_with_limit(
            &["frigate-config", "--sysfs-root", s, "--dev-root", d],
            Duration::from_secs(10),
        );
        prop_assert!(
            [0, 3].contains(&fc.status.code().unwrap()),
            "{}",
            stderr(&fc)
        );
        for o in [&out, &doc, &fc] {
            prop_assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
        }
    }
    Ok(())
}

/// Trees per run; the README's Reliability section quotes it.
const TREES: u32 = 300;

#[test]
fn hostile_trees() {
    // The strategies nest deeply; in a debug build they need more than the 2 MiB a
    // test thread gets.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(run_hostile_trees)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn run_hostile_trees() {
    let cov = Coverage::default();
    let config = ProptestConfig {
        cases: TREES,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    };
    // Locally every run draws new trees. In CI (CI set) the draw is fixed, so that a
    // submission is judged on the same trees every time; new ones are found locally.
    let mut runner = if std::env::var_os("CI").is_some() {
        let rng = proptest::test_runner::TestRng::deterministic_rng(config.rng_algorithm);
        proptest::test_runner::TestRunner::new_with_rng(config, rng)
    } else {
        proptest::test_runner::TestRunner::new(config)
    };
    if let Err(e) = runner.run(&tree(), |t| check(&t, &cov)) {
        panic!("{e}");
    }
    let get = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    eprintln!(
        "{} random trees: {} with a ready Coral PCIe TPU, {} with a Coral that is not ready, \
         {} with a Coral USB stick, {} with warnings; {} also through the binary",
        get(&cov.cases),
        get(&cov.coral_ready),
        get(&cov.coral_not_ready),
        get(&cov.usb_coral),
        get(&cov.with_warnings),
        get(&cov.binary_runs)
    );
    // The generator must reach the interesting states, not only garbage.
    assert!(get(&cov.coral_ready) >= 5, "too few trees with a ready TPU");
    assert!(get(&cov.coral_not_ready) >= 20);
    assert!(get(&cov.usb_coral) >= 20);
    assert!(get(&cov.with_warnings) >= TREES as usize / 2);
}

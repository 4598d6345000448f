//! `coral-nfd snapshot`: copy exactly the part of sysfs coral-nfd reads into a directory
//! that replays as `--sysfs-root DIR/sys --dev-root DIR/dev`, for bug reports and
//! fixtures. Every read and every listing of sysfs goes through [`Root`] (bounded,
//! regular files only, never out of the root); symlinks are recreated as relative
//! links between canonical paths.

use crate::model::Inventory;
use crate::root::{FsError, Root};
use crate::scan::{self, Depth};
use rustix::fs::FileType;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

/// The first line of `dev.manifest`: what tells a snapshot `--force` may replace.
const MANIFEST_HEADER: &str = "# type major:minor mode uid gid path  (relative to the dev root; the fixture dev.list format)\n";

/// Whether `dir` holds an earlier snapshot: its `dev.manifest` is a regular file that
/// starts with [`MANIFEST_HEADER`] (read without following a link planted there).
fn is_snapshot(dir: &Path) -> bool {
    use std::io::Read;
    let p = dir.join("dev.manifest");
    if !fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) {
        return false;
    }
    let mut head = vec![0u8; MANIFEST_HEADER.len()];
    fs::File::open(&p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == MANIFEST_HEADER.as_bytes())
}

/// Entries copied at most: a real node needs a few thousand.
const MAX_ENTRIES: usize = 100_000;

/// Attributes of every PCI function and USB device the scan reads.
const PCI_ATTRS: &[&str] = &["vendor"];
const CORAL_PCI_ATTRS: &[&str] = &[
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
];
const USB_ATTRS: &[&str] = &["idVendor"];
const CORAL_USB_ATTRS: &[&str] = &[
    "idVendor",
    "idProduct",
    "busnum",
    "devnum",
    "dev",
    "speed",
    "bcdDevice",
    "version",
];

pub struct Summary {
    pub files: usize,
    pub links: usize,
    pub nodes: usize,
    pub nodes_recreated: bool,
    pub skipped: Vec<String>,
}

struct Writer<'a> {
    sys: &'a Root,
    out: PathBuf,
    files: usize,
    links: usize,
    skipped: Vec<String>,
}

impl Writer<'_> {
    fn budget(&self) -> Result<(), String> {
        if self.files + self.links >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries; stopping"));
        }
        Ok(())
    }

    fn mkdir(&self, canonical: &Path) -> Result<(), String> {
        let p = self.out.join(canonical);
        fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Copies the attribute `rel` (resolved under the root) to its canonical place.
    fn attr(&mut self, rel: &Path) -> Result<(), String> {
        self.budget()?;
        let canonical = match self.sys.walk(rel, true) {
            Ok(c) => c,
            Err(FsError::Missing) => return Ok(()),
            Err(e) => {
                self.skipped.push(format!("{}: {e}", rel.display()));
                return Ok(());
            }
        };
        match self.sys.read_attr(&canonical) {
            Ok(bytes) => {
                if let Some(parent) = canonical.parent() {
                    self.mkdir(parent)?;
                }
                let dst = self.out.join(&canonical);
                match create_new(&dst, &bytes) {
                    Ok(()) => self.files += 1,
                    // Reached again by another link: copied already.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("{}: {e}", dst.display())),
                }
            }
            Err(FsError::Missing) => {}
            Err(e) => self.skipped.push(format!("{}: {e}", canonical.display())),
        }
        Ok(())
    }

    /// Recreates the symlink `rel` at its canonical place, leading to the canonical
    /// target by a relative path. A link whose target is missing or outside the root
    /// is left out.
    fn link(&mut self, rel: &Path) -> Result<Option<PathBuf>, String> {
        self.budget()?;
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(None);
        };
        match self.sys.entry_type(rel) {
            Ok(FileType::Symlink) => {}
            Ok(_) => {
                self.skipped
                    .push(format!("{}: is not a symlink", rel.display()));
                return Ok(None);
            }
            Err(FsError::Missing) => return Ok(None),
            Err(e) => {
                self.skipped.push(format!("{}: {e}", rel.display()));
                return Ok(None);
            }
        }
        let parent = match self.sys.walk(parent, true) {
            Ok(p) => p,
            Err(e) => {
                self.skipped.push(format!("{}: {e}", rel.display()));
                return Ok(None);
            }
        };
        let target = match self.sys.walk(rel, true) {
            Ok(t) => t,
            Err(FsError::Missing) => return Ok(None),
            Err(e) => {
                self.skipped.push(format!("{}: {e}", rel.display()));
                return Ok(None);
            }
        };
        self.mkdir(&parent)?;
        let at = self.out.join(&parent).join(name);
        if at.symlink_metadata().is_err() {
            symlink(relative_path(&parent, &target), &at)
                .map_err(|e| format!("{}: {e}", at.display()))?;
            self.links += 1;
        }
        Ok(Some(target))
    }

    /// Copies a directory's regular files and symlinks (not its sub-directories). The
    /// listing and every type check go through [`Root`] like the reads, so nothing
    /// here looks outside the root.
    fn dir_shallow(&mut self, canonical: &Path) -> Result<(), String> {
        if !matches!(self.sys.stat(canonical), Ok(st) if st.file_type == FileType::Directory) {
            self.skipped
                .push(format!("{}: is not a directory", canonical.display()));
            return Ok(());
        }
        self.mkdir(canonical)?;
        let names = match self.sys.read_dir(canonical) {
            Ok(names) => names,
            Err(e) => {
                self.skipped.push(format!("{}: {e}", canonical.display()));
                return Ok(());
            }
        };
        for name in names {
            let rel = canonical.join(&name);
            match self.sys.entry_type(&rel) {
                Ok(FileType::Symlink) => {
                    self.link(&rel)?;
                }
                Ok(FileType::RegularFile) => self.attr(&rel)?,
                Ok(FileType::Directory) | Err(FsError::Missing) => {}
                Ok(_) => self
                    .skipped
                    .push(format!("{}: is not a regular file", rel.display())),
                Err(e) => self.skipped.push(format!("{}: {e}", rel.display())),
            }
        }
        Ok(())
    }

    /// An enumeration entry (`bus/pci/devices/X`): its link, its directory and `attrs`.
    fn entry(&mut self, base: &str, name: &str, attrs: &[&str]) -> Result<(), String> {
        let rel = PathBuf::from(base).join(name);
        if self.link(&rel)?.is_none() {
            return Ok(());
        }
        for a in attrs {
            self.attr(&rel.join(a))?;
        }
        Ok(())
    }
}

/// `to` as seen from the directory `from` (both canonical, relative to the root).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    if p.as_os_str().is_empty() {
        p.push(".");
    }
    p
}

fn is_empty_dir(p: &Path) -> io::Result<bool> {
    match fs::read_dir(p) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// One `dev.manifest` line (the fixture `dev.list` format), or a comment.
/// A device node as the manifest records it.
struct Node {
    file_type: FileType,
    rdev: (u32, u32),
    mode: u32,
    owner: (u32, u32),
}

fn manifest_line(dev: &Root, rel: &str) -> (String, Option<Node>) {
    match dev.stat(rel) {
        Ok(st) => {
            let kind = match st.file_type {
                FileType::CharacterDevice => 'c',
                FileType::BlockDevice => 'b',
                FileType::Fifo => 'p',
                FileType::Directory => 'd',
                _ => 'f',
            };
            let (maj, min) = if matches!(kind, 'c' | 'b') {
                st.rdev
            } else {
                (0, 0)
            };
            (
                format!(
                    "{kind} {maj}:{min} {:04o} {} {} {rel}\n",
                    st.mode, st.uid, st.gid
                ),
                Some(Node {
                    file_type: st.file_type,
                    rdev: (maj, min),
                    mode: st.mode,
                    owner: (st.uid, st.gid),
                }),
            )
        }
        Err(FsError::Missing) => (format!("# missing: {rel}\n"), None),
        Err(e) => (format!("# unreadable: {rel}: {e}\n"), None),
    }
}

/// Makes the node again at `at`, with its mode, and its owner where that is permitted
/// (not as an ordinary user: the node is still useful for a replay without it).
fn recreate(at: &Path, n: &Node) -> io::Result<()> {
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent)?;
    }
    let mode = rustix::fs::Mode::from_raw_mode(n.mode);
    match n.file_type {
        FileType::Directory => fs::create_dir_all(at)?,
        FileType::RegularFile => create_new(at, b"")?,
        ft => {
            let dev = rustix::fs::makedev(n.rdev.0, n.rdev.1);
            rustix::fs::mknodat(rustix::fs::CWD, at, ft, mode, dev)?;
        }
    }
    // mknod applies the umask; the manifest's mode is the one to replay.
    rustix::fs::chmod(at, mode)?;
    let (uid, gid) = n.owner;
    let _ = rustix::fs::chownat(
        rustix::fs::CWD,
        at,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    Ok(())
}

/// Creates a file that must not exist yet: never follows a link planted at its place.
fn create_new(at: &Path, content: &[u8]) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(at)?
        .write_all(content)
}

/// Removes what is at `p` without following it: a directory with its contents, or the
/// file or link itself (a link planted in DIR never leads a write outside DIR).
fn remove_entry(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Device nodes the scan looks at: `apex_N` and the Coral USB nodes.
fn node_paths(inv: &Inventory) -> Vec<String> {
    let mut v: Vec<String> = inv.apex.iter().map(|a| a.name.clone()).collect();
    v.extend(
        inv.usb
            .iter()
            .filter_map(|d| d.node_path())
            .map(|p| p.trim_start_matches("/dev/").to_string()),
    );
    v
}

pub fn snapshot(sys: &Root, dev: &Root, out: &Path, force: bool) -> Result<Summary, String> {
    let scan = scan::discover_to(sys, dev, Depth::Doctor);
    let inv = &scan.inventory;
    let nonempty = !is_empty_dir(out).map_err(|e| format!("{}: {e}", out.display()))?;
    if nonempty && !force {
        return Err(format!(
            "{} is not empty; use --force to replace an earlier snapshot there",
            out.display()
        ));
    }
    if nonempty && !is_snapshot(out) {
        return Err(format!(
            "{} holds no earlier snapshot (no dev.manifest written by coral-nfd snapshot): \
             --force replaces only a snapshot, never other files; choose an empty or new \
             directory",
            out.display()
        ));
    }
    for ours in ["sys", "dev", "dev.manifest", "README"] {
        let p = out.join(ours);
        remove_entry(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    fs::create_dir_all(out.join("sys")).map_err(|e| format!("{}: {e}", out.display()))?;

    let mut w = Writer {
        sys,
        out: out.join("sys"),
        files: 0,
        links: 0,
        skipped: Vec::new(),
    };
    let coral_pci: Vec<&str> = inv.pcie.iter().map(|f| f.address.as_str()).collect();
    for name in list(sys, "bus/pci/devices") {
        if coral_pci.contains(&name.as_str()) {
            w.entry("bus/pci/devices", &name, CORAL_PCI_ATTRS)?;
            let driver = PathBuf::from("bus/pci/devices").join(&name).join("driver");
            if let Some(target) = w.link(&driver)? {
                w.dir_shallow(&target)?;
            }
        } else {
            w.entry("bus/pci/devices", &name, PCI_ATTRS)?;
        }
    }
    if sys.stat("bus/pci/drivers/apex").is_ok() {
        let canonical = sys
            .walk(Path::new("bus/pci/drivers/apex"), true)
            .map_err(|e| format!("bus/pci/drivers/apex: {e}"))?;
        w.dir_shallow(&canonical)?;
    }
    for module in ["module/apex", "module/gasket"] {
        if let Ok(canonical) = sys.walk(Path::new(module), true) {
            w.dir_shallow(&canonical)?;
        }
    }
    for name in list(sys, "class/apex") {
        if let Some(target) = w.link(&PathBuf::from("class/apex").join(&name))? {
            w.dir_shallow(&target)?;
        }
    }
    let coral_usb: Vec<&str> = inv.usb.iter().map(|d| d.path.as_str()).collect();
    for name in list(sys, "bus/usb/devices") {
        let attrs = if coral_usb.contains(&name.as_str()) {
            CORAL_USB_ATTRS
        } else if scan::is_port_path(&name) {
            USB_ATTRS
        } else {
            &[]
        };
        w.entry("bus/usb/devices", &name, attrs)?;
    }

    let mut manifest = String::from(MANIFEST_HEADER);
    let mut nodes = 0;
    let mut recreated = true;
    for rel in node_paths(inv) {
        let (line, node) = manifest_line(dev, &rel);
        manifest.push_str(&line);
        if let Some(node) = node {
            nodes += 1;
            if recreate(&out.join("dev").join(&rel), &node).is_err() {
                recreated = false;
            }
        }
    }
    fs::create_dir_all(out.join("dev")).map_err(|e| format!("{}: {e}", out.display()))?;
    write(out, "dev.manifest", &manifest)?;

    let mut readme = format!(
        "coral-nfd {} snapshot, taken {}\n\n\
         sys/          the part of {} that coral-nfd reads (relative symlinks kept,\n\
         \x20             attributes of at most 4096 bytes, regular files only)\n\
         dev.manifest  the device nodes it checks under {}: type major:minor mode uid gid path\n\
         dev/          those nodes, recreated{}\n\n\
         Replay:  coral-nfd --sysfs-root sys --dev-root dev\n\
         \x20        coral-nfd doctor --sysfs-root sys --dev-root dev\n",
        env!("CARGO_PKG_VERSION"),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        sys.path().display(),
        dev.path().display(),
        if recreated {
            ""
        } else {
            " (NOT: mknod was refused; run as root, from dev.manifest)"
        }
    );
    if !w.skipped.is_empty() {
        let _ = writeln!(readme, "\nLeft out:");
        for s in &w.skipped {
            let _ = writeln!(readme, "  {s}");
        }
    }
    write(out, "README", &readme)?;
    Ok(Summary {
        files: w.files,
        links: w.links,
        nodes,
        nodes_recreated: recreated,
        skipped: w.skipped,
    })
}

fn list(root: &Root, rel: &str) -> Vec<String> {
    root.read_dir(rel)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect()
}

fn write(dir: &Path, name: &str, content: &str) -> Result<(), String> {
    let p = dir.join(name);
    create_new(&p, content.as_bytes()).map_err(|e| format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            r(
                "bus/pci/devices",
                "devices/pci0000:00/0000:00:1c.4/0000:03:00.0"
            ),
            PathBuf::from("../../../devices/pci0000:00/0000:00:1c.4/0000:03:00.0")
        );
        assert_eq!(
            r(
                "devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0",
                "devices/pci0000:00/0000:00:1c.4/0000:03:00.0"
            ),
            PathBuf::from("../..")
        );
        assert_eq!(r("a", "a"), PathBuf::from("."));
    }
}

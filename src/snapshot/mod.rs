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
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

mod outdir;
use outdir::{
    MANIFEST_HEADER, create_new, is_empty_dir, is_snapshot, manifest_line, recreate, remove_entry,
    write,
};

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
                    Ok(_) => self.files += 1,
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
    // The header first: a snapshot that stops half-way (a full disk, the entry limit)
    // is still known as ours, so `--force` may replace it.
    fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut manifest_file = write(out, "dev.manifest", MANIFEST_HEADER)?;
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

    // The lines after the header, written through the file this run created.
    let mut manifest = String::new();
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
    io::Write::write_all(&mut manifest_file, manifest.as_bytes())
        .map_err(|e| format!("{}: {e}", out.join("dev.manifest").display()))?;
    drop(manifest_file);

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

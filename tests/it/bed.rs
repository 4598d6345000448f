//! The one test bed: a writable copy of a fixture scenario (its sysfs tree and its dev
//! root made with mknod) in a temporary directory, with the output path inside it, and
//! the helpers to drive the binary on it, once or as a daemon.

use crate::util::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for something that must happen eventually (a rescan, a write, an
/// exit). Generous on purpose: CI runs the suite in parallel on two loaded cores, and a
/// wait that fails there measures the machine, not the daemon. Where promptness is the
/// point, the test measures it on the daemon's side (file times), not with this.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Bed {
    dir: tempfile::TempDir,
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Bed {
    /// `scenario` copied into a fresh temporary directory; `None` (after saying so
    /// loudly, see [`no_mknod`]) when device nodes cannot be made here.
    pub fn new(scenario: &str) -> Option<Bed> {
        Bed::new_in(scenario, &std::env::temp_dir())
    }

    /// [`Bed::new`] under `base` (e.g. a tmpfs).
    pub fn new_in(scenario: &str, base: &Path) -> Option<Bed> {
        let dir = tempfile::tempdir_in(base).unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        copy_tree(&fixtures_dir().join(scenario).join("sys"), &sys);
        let list = fs::read_to_string(fixtures_dir().join(scenario).join("dev.list")).unwrap();
        fs::create_dir_all(&dev).unwrap();
        if dev_root_from_list(&list, &dev).is_none() {
            no_mknod(scenario);
            return None;
        }
        Some(Bed { dir, sys, dev })
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the feature file goes: `features.d/coral-nfd` in the bed.
    pub fn out(&self) -> PathBuf {
        self.dir().join("features.d/coral-nfd")
    }

    /// `--sysfs-root` and `--dev-root` of this bed, then `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--sysfs-root".into(),
            self.sys.to_str().unwrap().into(),
            "--dev-root".into(),
            self.dev.to_str().unwrap().into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// [`Bed::args`] with `--output-file` [`Bed::out`].
    pub fn file_args(&self, extra: &[&str]) -> Vec<String> {
        let out = self.out();
        let mut v = self.args(&["--output-file", out.to_str().unwrap()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// Runs the binary on this bed to completion (see [`run`]).
    pub fn run(&self, args: &[String]) -> Output {
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Makes `/dev/apex_0` of this bed exist (ready) or not.
    pub fn set_apex_node(&self, present: bool) {
        let node = self.dev.join("apex_0");
        if present {
            mknod(&node, 'c', 120, 0, 0o660).unwrap();
        } else {
            fs::remove_file(node).unwrap();
        }
    }

    /// Starts the daemon on this bed writing [`Bed::out`] with `extra` flags; returns
    /// once it has written its first version (every daemon writes once at start).
    pub fn daemon(&self, extra: &[&str]) -> Child {
        let out = self.out();
        let before = changed_at(&out);
        let child = spawn(&self.file_args(extra));
        wait_for("first write", PATIENCE, || {
            out.exists() && changed_at(&out) != before
        });
        child
    }
}

/// When `p` was last replaced (its inode and change time), if it exists.
pub fn changed_at(p: &Path) -> Option<(u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p)
        .ok()
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Starts the binary with a clean environment, stdout discarded, stderr piped.
pub fn spawn(args: &[String]) -> Child {
    Command::new(bin())
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Everything a child said on stderr (piped), once it has exited.
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    err
}

/// SIGTERM; the daemon must exit 0 (within [`PATIENCE`]); then everything it said.
pub fn stop_and_log(mut child: Child) -> String {
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, PATIENCE).success());
    stderr_of(&mut child)
}

/// SIGTERM, then the daemon must exit 0 (within [`PATIENCE`]).
pub fn stop_daemon(mut child: Child) {
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, PATIENCE).success());
}

/// Waits for `cond`, failing after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the child to exit, killing it and failing after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("daemon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The file's content, or empty when it is not there (yet).
pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// The staging directory coral-nfd uses for `out`, from the output module's own API.
pub fn staging(out: &Path) -> PathBuf {
    coral_nfd::output::staging_path(out)
}

/// What a feature file says of `apex_0`: ready, not ready, or nothing.
pub fn ready_in(content: &str) -> Option<bool> {
    if content.contains("coral-tpu.apex_0.ready=true\n") {
        Some(true)
    } else if content.contains("coral-tpu.apex_0.ready=false\n") {
        Some(false)
    } else {
        None
    }
}

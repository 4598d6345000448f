//! `coral-nfd device-plugin`: a kubelet device plugin (API v1beta1) that hands each pod
//! asking for `coral.ai/tpu` one PCIe TPU, with per-TPU health from the labeler's rules.
//!
//! What the kubelet does, from its devicemanager (`pkg/kubelet/cm/devicemanager/`):
//! - `Register` (on `kubelet.sock`) checks the version (`v1beta1`) and that the resource
//!   is an extended resource name, then dials the plugin's socket back at once, with
//!   HTTP/2 authority `localhost` (kubelet 1.26 and later; earlier ones sent the socket
//!   path, which h2 refuses), and calls `GetDevicePluginOptions`: the plugin must be
//!   serving before it registers. Then it keeps `ListAndWatch` open; `Allocate` comes per
//!   container; `GetPreferredAllocation` and `PreStartContainer` only when the options
//!   ask for them (these do not).
//! - When the kubelet starts it deletes every socket in the directory, ours included:
//!   the plugin notices (its socket gone) and serves and registers again, a second after
//!   its old streams ended: a kubelet that handles the old stream's end after the new
//!   registration (`PluginDisconnected` in `manager.go` stops whatever endpoint is
//!   registered *now*) would otherwise stop the new endpoint.
//! - A `Register` whose dial-back fails leaves a connection open in the kubelet, so
//!   retries back off exponentially (250 ms doubling to 8 s).
//! - Unhealthy devices stay in capacity but leave allocatable; running pods keep theirs.
//! - One plugin per kubelet directory: a second would replace the first's socket and
//!   both would register forever. A lock file next to the socket keeps it so.
//!
//! The tokio runtime (current-thread) exists only in this mode; the labeler never
//! starts one.

mod devices;
mod kubelet_dir;
mod server;

pub use devices::{Tpu, health_changes, tpus};
pub use kubelet_dir::check_resource_name;
use kubelet_dir::{check_kubelet_dir, lock_dir};

use crate::events::{self, Event};
use crate::hotplug;
use crate::log::{self, Fatal};
use crate::metrics::{self, PluginStats};
use crate::root::Root;
use crate::scan;
use crate::serve;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The generated API (proto/deviceplugin.proto).
pub mod pb {
    tonic::include_proto!("v1beta1");
}

/// The file name of the plugin's socket in the device-plugins directory.
pub const SOCKET_NAME: &str = "coral-nfd.sock";
/// The lock that keeps a second plugin off the directory; it names its holder.
pub const LOCK_NAME: &str = "coral-nfd.lock";
/// How often the socket is checked (a kubelet restart deletes it) and sysfs rescanned
/// (status and temperature send no events).
const TICK: Duration = Duration::from_millis(500);
/// The first retry of a failed registration, doubled at each failure up to
/// [`RETRY_MAX`], back to this after a success.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// Time between the end of the old streams and registering again (see the module
/// comment: a late `PluginDisconnected` must not stop the new endpoint).
pub const REREGISTER_AFTER: Duration = Duration::from_secs(1);

pub struct Options {
    pub kubelet_dir: PathBuf,
    pub resource: String,
    pub metrics: Option<serve::Address>,
}

fn scan_tpus(sys: &Path, dev: &Path) -> Result<Vec<Tpu>, String> {
    let (sys, dev) = (Root::open(sys), Root::open(dev));
    scan::check_roots(&sys, &dev).map_err(|e| e.message)?;
    let scan = scan::discover(&sys, &dev);
    if let Some(why) = scan.incomplete() {
        return Err(why);
    }
    Ok(tpus(&scan.inventory))
}

pub type Stats = Arc<Mutex<PluginStats>>;

fn update(stats: &Stats, f: impl FnOnce(&mut PluginStats)) {
    if let Ok(mut s) = stats.lock() {
        f(&mut s);
    }
}

/// Runs the plugin until SIGTERM/SIGINT; removes its socket on the way out.
pub fn run(opts: &Options, sys: &Root, dev: &Root) -> Result<(), Fatal> {
    scan::check_roots(sys, dev)?;
    check_kubelet_dir(&opts.kubelet_dir)?;
    let metrics = match opts.metrics {
        Some(addr) => Some(serve::bind(addr).map_err(Fatal::usage)?),
        None => None,
    };
    let _lock = lock_dir(&opts.kubelet_dir)?;
    let (tx, rx) = events::channel()
        .map_err(|e| Fatal::failure(format!("cannot install signal handlers: {e}")))?;
    if let Err(e) = hotplug::spawn(dev.path(), tx) {
        log::warning(format_args!(
            "cannot watch {} for hotplug ({e}); rescanning every {} ms only",
            dev.path().display(),
            TICK.as_millis()
        ));
    }
    let stats = Stats::default();
    if let Some(listener) = metrics {
        let reader = stats.clone();
        listener
            .start(move || {
                let s = reader.lock().map(|s| s.clone()).unwrap_or_default();
                metrics::device_plugin(&s)
            })
            .map_err(Fatal::failure)?;
    }
    // Signals and hotplug arrive on a std channel; the runtime reads a tokio one.
    let (atx, arx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            for ev in rx {
                if atx.send(ev).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Fatal::failure(format!("cannot start a thread: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::failure(format!("cannot start the runtime: {e}")))?;
    log::info(format_args!(
        "device plugin started: version {}, resource {}, socket {}, sysfs {}, dev {}",
        env!("CARGO_PKG_VERSION"),
        opts.resource,
        opts.kubelet_dir.join(SOCKET_NAME).display(),
        sys.path().display(),
        dev.path().display()
    ));
    rt.block_on(Plugin::new(opts, sys.path(), dev.path(), stats).serve(arx))
}

/// The identity of a file (device, inode), to tell our socket from another.
fn identity(p: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

struct Plugin<'a> {
    opts: &'a Options,
    sys: PathBuf,
    dev: PathBuf,
    socket: PathBuf,
    devices: watch::Sender<Vec<Tpu>>,
    stats: Stats,
    /// A complete scan has been published: until then the kubelet is not told of any
    /// device (an empty list from a scan that could not see everything is not the truth).
    scanned: bool,
    roots_warned: Option<Instant>,
}

impl<'a> Plugin<'a> {
    fn new(opts: &'a Options, sys: &Path, dev: &Path, stats: Stats) -> Self {
        let mut plugin = Plugin {
            opts,
            sys: sys.into(),
            dev: dev.into(),
            socket: opts.kubelet_dir.join(SOCKET_NAME),
            devices: watch::channel(Vec::new()).0,
            stats,
            scanned: false,
            roots_warned: None,
        };
        plugin.rescan();
        plugin
    }

    /// The first complete scan's devices, one line each.
    fn log_devices(list: &[Tpu]) {
        for t in list {
            log::info(format_args!(
                "{} ({}) {}",
                t.id,
                t.node.as_deref().unwrap_or("no /dev/apex_N"),
                if t.healthy {
                    "Healthy".to_string()
                } else {
                    format!("Unhealthy ({})", t.state)
                }
            ));
        }
    }

    fn publish(&self, list: Vec<Tpu>) {
        let healthy = list.iter().filter(|t| t.healthy).count() as u64;
        let unhealthy = list.len() as u64 - healthy;
        update(&self.stats, |s| {
            s.healthy = healthy;
            s.unhealthy = unhealthy;
        });
        self.devices.send_replace(list);
    }

    /// Rescans and publishes the list when it changed (every open ListAndWatch sends it).
    fn rescan(&mut self) {
        match scan_tpus(&self.sys, &self.dev) {
            Ok(new) => {
                self.roots_warned = None;
                if self.scanned {
                    for c in health_changes(&self.devices.borrow(), &new) {
                        log::info(c);
                    }
                } else {
                    // Said at the first complete scan, whenever that comes.
                    Self::log_devices(&new);
                }
                // Any difference is published, a renumbered /dev/apex_N included: Allocate
                // must hand out the node the TPU has now.
                if !self.scanned || *self.devices.borrow() != new {
                    self.publish(new);
                }
                self.scanned = true;
            }
            // Keep the last list: a vanished mount or an unreadable sysfs says nothing
            // about the TPUs.
            Err(why) => {
                if self
                    .roots_warned
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    let keeping = if self.scanned {
                        "keeping the last device list"
                    } else {
                        "not registering until a scan is complete"
                    };
                    log::warning(format_args!("{why}; {keeping}"));
                    self.roots_warned = Some(Instant::now());
                }
            }
        }
    }

    /// Waits `d`, rescanning at each hotplug event or SIGHUP meanwhile (they do not cut
    /// the wait short); `false` when asked to stop.
    async fn wait(&mut self, events: &mut mpsc::UnboundedReceiver<Event>, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                ev = events.recv() => match ev {
                    Some(Event::Stop) | None => return false,
                    Some(_) => self.rescan(),
                },
            }
        }
    }

    /// Whether the socket at our path is gone, or is not the one this run made.
    fn socket_gone(&self, ours: Option<(u64, u64)>) -> bool {
        ours.is_none() || identity(&self.socket) != ours
    }

    /// Removes the socket only if it is the one this run made.
    fn remove_socket(&self, ours: Option<(u64, u64)>) {
        if !self.socket_gone(ours) {
            let _ = fs::remove_file(&self.socket);
        }
    }

    /// Registers until the kubelet accepts, backing off; `None` when asked to stop,
    /// `Some(false)` when our socket went away meanwhile (serve again first). Events
    /// that come meanwhile rescan; they neither restart a call nor shorten a wait.
    async fn register(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Event>,
        ours: Option<(u64, u64)>,
    ) -> Option<bool> {
        let opts = self.opts;
        let mut retry = RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let call = server::register(&opts.kubelet_dir, &opts.resource);
            tokio::pin!(call);
            let outcome = loop {
                tokio::select! {
                    r = &mut call => break r,
                    ev = events.recv() => match ev {
                        Some(Event::Stop) | None => return None,
                        Some(_) => self.rescan(),
                    },
                }
            };
            match outcome {
                Ok(()) => {
                    update(&self.stats, |s| {
                        s.registrations_success += 1;
                        s.registered = true;
                    });
                    log::info(format_args!(
                        "registered {} with the kubelet",
                        opts.resource
                    ));
                    return Some(true);
                }
                Err(e) => {
                    update(&self.stats, |s| s.registrations_failure += 1);
                    // Said at the first failure, then when the wait reaches its cap.
                    if failures == 0 || (retry == RETRY_MAX && failures.is_multiple_of(8)) {
                        log::warning(format_args!(
                            "cannot register with the kubelet ({e}); retrying in {}",
                            humantime::format_duration(retry)
                        ));
                    }
                    failures += 1;
                    if !self.wait(events, retry).await {
                        return None;
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                    if self.socket_gone(ours) {
                        return Some(false);
                    }
                }
            }
        }
    }

    async fn serve(mut self, mut events: mpsc::UnboundedReceiver<Event>) -> Result<(), Fatal> {
        // Nothing is offered until a scan has seen everything.
        while !self.scanned {
            if !self.wait(&mut events, TICK).await {
                log::info("stopped");
                return Ok(());
            }
            self.rescan();
        }
        // A socket left by an earlier run (the lock says none of ours is running) may
        // still have a stream the kubelet has yet to see end: wait as after our own
        // restart.
        let mut after_streams =
            fs::symlink_metadata(&self.socket).is_ok_and(|m| m.file_type().is_socket());
        loop {
            if after_streams && !self.wait(&mut events, REREGISTER_AFTER).await {
                log::info("stopped");
                return Ok(());
            }
            let fail =
                |e: std::io::Error| Fatal::failure(format!("{}: {e}", self.socket.display()));
            server::remove_stale(&self.socket).await.map_err(fail)?;
            let running = server::start(&self.socket, self.devices.subscribe(), self.stats.clone())
                .map_err(fail)?;
            let ours = identity(&self.socket);
            let registered = match self.register(&mut events, ours).await {
                None => {
                    running.stop().await;
                    self.remove_socket(ours);
                    log::info("stopped");
                    return Ok(());
                }
                Some(r) => r,
            };
            let gone = if registered {
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tokio::select! {
                        ev = events.recv() => match ev {
                            Some(Event::Stop) | None => break false,
                            Some(_) => self.rescan(),
                        },
                        _ = tick.tick() => {
                            if self.socket_gone(ours) {
                                break true;
                            }
                            self.rescan();
                        }
                    }
                }
            } else {
                true
            };
            update(&self.stats, |s| s.registered = false);
            running.stop().await;
            if !gone {
                self.remove_socket(ours);
                log::info("stopped");
                return Ok(());
            }
            log::warning(format_args!(
                "{} was removed (the kubelet restarted?); serving and registering again in {}",
                self.socket.display(),
                humantime::format_duration(REREGISTER_AFTER)
            ));
            after_streams = true;
        }
    }
}

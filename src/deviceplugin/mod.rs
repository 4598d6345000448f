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
//!   the plugin notices (its socket gone) and serves and registers again.
//! - Unhealthy devices stay in capacity but leave allocatable; running pods keep theirs.
//!
//! The tokio runtime (current-thread) exists only in this mode; the labeler never
//! starts one.

mod devices;
mod server;

pub use devices::{Tpu, health_changes, tpus};

use crate::events::{self, Event};
use crate::hotplug;
use crate::log::{self, Fatal};
use crate::root::Root;
use crate::scan;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The generated API (proto/deviceplugin.proto).
pub mod pb {
    tonic::include_proto!("v1beta1");
}

/// The file name of the plugin's socket in the device-plugins directory.
pub const SOCKET_NAME: &str = "coral-nfd.sock";
/// How often the socket is checked (a kubelet restart deletes it) and sysfs rescanned
/// (status and temperature send no events).
const TICK: Duration = Duration::from_millis(500);
/// How often a failed registration is retried.
const RETRY: Duration = Duration::from_millis(250);

pub struct Options {
    pub kubelet_dir: PathBuf,
    pub resource: String,
}

/// Whether `name` is an extended resource name the kubelet accepts: `domain/name`, a
/// qualified name, outside `kubernetes.io` (`v1helper.IsExtendedResourceName`).
pub fn is_extended_resource_name(name: &str) -> bool {
    let Some((domain, _)) = name.split_once('/') else {
        return false;
    };
    let kubernetes = domain == "kubernetes.io" || domain.ends_with(".kubernetes.io");
    !kubernetes
        && domain != "requests"
        && crate::label::is_qualified_name(name)
        && crate::label::is_qualified_name(&format!("requests.{name}"))
}

fn scan_tpus(sys: &Path, dev: &Path) -> Result<Vec<Tpu>, String> {
    let (sys, dev) = (Root::open(sys), Root::open(dev));
    scan::check_roots(&sys, &dev)?;
    Ok(tpus(&scan::discover(&sys, &dev).inventory))
}

/// Runs the plugin until SIGTERM/SIGINT; removes its socket on the way out.
pub fn run(opts: &Options, sys: &Root, dev: &Root) -> Result<(), Fatal> {
    scan::check_roots(sys, dev).map_err(Fatal::usage)?;
    if !opts.kubelet_dir.is_dir() {
        return Err(Fatal::usage(format!(
            "kubelet directory {} is not a directory (check --kubelet-dir and the volume behind it)",
            opts.kubelet_dir.display()
        )));
    }
    let (tx, rx) = events::channel()
        .map_err(|e| Fatal::failure(format!("cannot install signal handlers: {e}")))?;
    if let Err(e) = hotplug::spawn(dev.path(), tx) {
        log::warning(format_args!(
            "cannot watch {} for hotplug ({e}); rescanning every {} ms only",
            dev.path().display(),
            TICK.as_millis()
        ));
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
    rt.block_on(Plugin::new(opts, sys.path(), dev.path()).serve(arx))
}

struct Plugin<'a> {
    opts: &'a Options,
    sys: PathBuf,
    dev: PathBuf,
    socket: PathBuf,
    devices: watch::Sender<Vec<Tpu>>,
    roots_warned: Option<Instant>,
}

impl<'a> Plugin<'a> {
    fn new(opts: &'a Options, sys: &Path, dev: &Path) -> Self {
        let first = scan_tpus(sys, dev).unwrap_or_default();
        for t in &first {
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
        Plugin {
            opts,
            sys: sys.into(),
            dev: dev.into(),
            socket: opts.kubelet_dir.join(SOCKET_NAME),
            devices: watch::channel(first).0,
            roots_warned: None,
        }
    }

    /// Rescans and publishes the list when it changed (every open ListAndWatch sends it).
    fn rescan(&mut self) {
        match scan_tpus(&self.sys, &self.dev) {
            Ok(new) => {
                self.roots_warned = None;
                for c in health_changes(&self.devices.borrow(), &new) {
                    log::info(c);
                }
                // Any difference is published, a renumbered /dev/apex_N included: Allocate
                // must hand out the node the TPU has now.
                if *self.devices.borrow() != new {
                    self.devices.send_replace(new);
                }
            }
            // Keep the last list: a vanished mount says nothing about the TPUs.
            Err(why) => {
                if self
                    .roots_warned
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    log::warning(format_args!("{why}; keeping the last device list"));
                    self.roots_warned = Some(Instant::now());
                }
            }
        }
    }

    async fn serve(mut self, mut events: mpsc::UnboundedReceiver<Event>) -> Result<(), Fatal> {
        loop {
            let running = server::start(&self.socket, self.devices.subscribe())
                .map_err(|e| Fatal::failure(format!("{}: {e}", self.socket.display())))?;
            let inode = std::fs::metadata(&self.socket).map(|m| m.ino()).ok();
            // Register, retrying quietly until the kubelet answers (it may be
            // restarting, and may delete our socket again meanwhile); a stop ends the wait.
            let mut failures = 0u32;
            let registered = loop {
                let outcome = tokio::select! {
                    r = server::register(&self.opts.kubelet_dir, &self.opts.resource) => Some(r),
                    ev = events.recv() => match ev {
                        Some(Event::Stop) | None => None,
                        Some(_) => continue,
                    },
                };
                match outcome {
                    None => break false,
                    Some(Ok(())) => {
                        log::info(format_args!(
                            "registered {} with the kubelet",
                            self.opts.resource
                        ));
                        break true;
                    }
                    Some(Err(e)) => {
                        if failures.is_multiple_of(40) {
                            log::warning(format_args!(
                                "cannot register with the kubelet ({e}); retrying"
                            ));
                        }
                        failures += 1;
                        tokio::time::sleep(RETRY).await;
                        let now = std::fs::metadata(&self.socket).map(|m| m.ino()).ok();
                        if now.is_none() || now != inode {
                            break true; // serve again on a new socket, then register
                        }
                    }
                }
            };
            if !registered {
                running.stop().await;
                let _ = std::fs::remove_file(&self.socket);
                log::info("stopped");
                return Ok(());
            }
            let mut tick = tokio::time::interval(TICK);
            let gone = loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(Event::Stop) | None => break false,
                        Some(_) => self.rescan(),
                    },
                    _ = tick.tick() => {
                        let now = std::fs::metadata(&self.socket).map(|m| m.ino()).ok();
                        if now.is_none() || now != inode {
                            break true;
                        }
                        self.rescan();
                    }
                }
            };
            running.stop().await;
            if !gone {
                let _ = std::fs::remove_file(&self.socket);
                log::info("stopped");
                return Ok(());
            }
            log::warning(format_args!(
                "{} was removed (the kubelet restarted?); serving and registering again",
                self.socket.display()
            ));
        }
    }
}

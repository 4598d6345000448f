//! The gRPC side: the `DevicePlugin` service on our socket, and `Register` on the
//! kubelet's.

use super::pb::device_plugin_server::{DevicePlugin, DevicePluginServer};
use super::pb::registration_client::RegistrationClient;
use super::pb::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, Device, DevicePluginOptions,
    DeviceSpec, Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
    RegisterRequest, TopologyInfo,
};
use super::{SOCKET_NAME, Stats, Tpu, update};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The API version this plugin speaks.
pub const VERSION: &str = "v1beta1";

fn response(list: &[Tpu]) -> ListAndWatchResponse {
    ListAndWatchResponse {
        devices: list
            .iter()
            .map(|t| Device {
                id: t.id.clone(),
                health: if t.healthy { "Healthy" } else { "Unhealthy" }.into(),
                // The kubelet's topology manager aligns the pod's CPUs with it; none
                // when the kernel knows no NUMA node (-1).
                topology: t.numa_node.map(|n| TopologyInfo {
                    nodes: vec![NumaNode { id: i64::from(n) }],
                }),
            })
            .collect(),
    }
}

/// The DevicePlugin service: the current list, and a way to end every open stream when
/// the server stops (a graceful shutdown waits for streams, and ListAndWatch never ends
/// on its own).
struct Service {
    devices: watch::Receiver<Vec<Tpu>>,
    stopping: watch::Receiver<bool>,
    stats: Stats,
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        // Neither GetPreferredAllocation nor PreStartContainer is wanted.
        Ok(Response::new(DevicePluginOptions::default()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut devices = self.devices.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let list = response(&devices.borrow_and_update());
                if tx.send(Ok(list)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = devices.changed() => if changed.is_err() { return },
                    _ = stopping.wait_for(|s| *s) => return,
                    // The kubelet closed the stream.
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_preferred_allocation(
        &self,
        _: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Err(Status::unimplemented(
            "GetPreferredAllocation is not offered (get_preferred_allocation_available is false)",
        ))
    }

    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let r = self.allocate_now(req.into_inner());
        update(&self.stats, |s| match r {
            Ok(_) => s.allocations_success += 1,
            Err(_) => s.allocations_failure += 1,
        });
        r.map(Response::new)
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse::default()))
    }
}

impl Service {
    fn allocate_now(&self, req: AllocateRequest) -> Result<AllocateResponse, Status> {
        let list = self.devices.borrow().clone();
        let mut out = AllocateResponse::default();
        for c in req.container_requests {
            let mut resp = ContainerAllocateResponse::default();
            for id in c.devices_ids {
                let tpu = list
                    .iter()
                    .find(|t| t.id == id)
                    .ok_or_else(|| Status::not_found(format!("no TPU {id} on this node")))?;
                let node = tpu.node.clone().ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "TPU {id} has no /dev/apex_N ({})",
                        tpu.state
                    ))
                })?;
                // The node under its own name: libedgetpu in the pod stats
                // /dev/<class entry>, and this is the only one it will find: pci:0.
                resp.devices.push(DeviceSpec {
                    container_path: node.clone(),
                    host_path: node,
                    permissions: "rw".into(),
                });
            }
            out.container_responses.push(resp);
        }
        Ok(out)
    }
}

/// A server running on the socket.
pub struct Running {
    stopping: watch::Sender<bool>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Ends every stream, then the server.
    pub async fn stop(mut self) {
        let _ = self.stopping.send(true);
        let _ = self.shutdown.send(());
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Removes a dead socket left at `socket` by an earlier run (the directory's lock says
/// no other coral-nfd plugin runs). A socket someone listens on (it accepts, or its
/// backlog is full: a unix connect then fails at once with EAGAIN rather than wait), or
/// anything that is not a socket, is not ours to remove: an error. The timeout only
/// guards against a connect that would wait after all.
pub async fn remove_stale(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            let probe = tokio::net::UnixStream::connect(socket);
            match tokio::time::timeout(Duration::from_secs(1), probe).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(socket)
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    Err(std::io::Error::other(
                        "another process listens on this socket (its backlog is full); it is not ours to replace",
                    ))
                }
                Ok(Ok(_)) | Err(_) => Err(std::io::Error::other(
                    "another process serves this socket; it is not ours to replace",
                )),
                Ok(Err(e)) => Err(std::io::Error::other(format!(
                    "a socket is there that cannot be checked ({e}); not removing it"
                ))),
            }
        }
        Ok(_) => Err(std::io::Error::other(
            "something other than a socket is there; it is not ours to replace",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Binds `socket` (see [`remove_stale`] first) and serves the plugin there.
pub fn start(
    socket: &Path,
    devices: watch::Receiver<Vec<Tpu>>,
    stats: Stats,
) -> std::io::Result<Running> {
    let listener = tokio::net::UnixListener::bind(socket)?;
    let (stopping, stopping_rx) = watch::channel(false);
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let service = Service {
        devices,
        stopping: stopping_rx,
        stats,
    };
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let served = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(service))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = shutdown_rx.await;
            })
            .await;
        if let Err(e) = served {
            crate::log::error(format_args!("device plugin server: {e}"));
        }
    });
    Ok(Running {
        stopping,
        shutdown,
        task,
    })
}

/// `Register` on the kubelet's socket in `dir`.
pub async fn register(dir: &Path, resource: &str) -> Result<(), String> {
    let kubelet: PathBuf = dir.join("kubelet.sock");
    // The URI is required by the API and unused: the connector dials the socket.
    let endpoint = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = kubelet.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {}: {e}",
                dir.join("kubelet.sock").display()
            )
        })?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: VERSION.into(),
            endpoint: SOCKET_NAME.into(),
            resource_name: resource.into(),
            options: Some(DevicePluginOptions::default()),
        })
        .await
        .map_err(|s| format!("Register refused: {}", s.message()))?;
    Ok(())
}

//! The plugin's devices: one per Coral PCIe function, its ID the PCI address, its
//! health the labeler's own readiness rules ([`crate::state::pcie_state`]). Pure.

use crate::model::Inventory;
use crate::state;
use std::borrow::Cow;

/// One TPU as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpu {
    /// The PCI address: stable across reboots and driver reloads, unlike `apex_N`.
    pub id: String,
    pub healthy: bool,
    /// Why not, when not (the `state` code).
    pub state: Cow<'static, str>,
    /// `/dev/apex_N` on the host, when a class device belongs to the function.
    pub node: Option<String>,
    /// The function's NUMA node, when the kernel knows one (`numa_node` >= 0): the
    /// kubelet's topology manager aligns CPUs and memory with it.
    pub numa_node: Option<u32>,
}

/// The devices of a node, in PCI address order. A TPU that stops working stays in the
/// list as unhealthy (kubelet then takes it out of allocatable, not capacity, and
/// Kubernetes 1.36 shows it in the pod's `allocatedResourcesStatus`).
pub fn tpus(inv: &Inventory) -> Vec<Tpu> {
    inv.pcie
        .iter()
        .map(|f| {
            let st = state::pcie_state(inv, f);
            Tpu {
                id: f.address.clone(),
                healthy: st.is_ready(),
                state: st.code(),
                node: state::apex_of(inv, f).map(|a| a.node_path()),
                numa_node: f.numa_node.value().copied().flatten(),
            }
        })
        .collect()
}

/// Phrases for what changed between two lists, for the log.
pub fn health_changes(old: &[Tpu], new: &[Tpu]) -> Vec<String> {
    let word = |h: bool| if h { "Healthy" } else { "Unhealthy" };
    let mut out = Vec::new();
    for n in new {
        let name = n.node.as_deref().unwrap_or("no /dev/apex_N");
        match old.iter().find(|o| o.id == n.id) {
            Some(o) if o.healthy == n.healthy => {}
            Some(o) => out.push(format!(
                "{} ({name}) {} -> {} ({})",
                n.id,
                word(o.healthy),
                word(n.healthy),
                n.state
            )),
            None => out.push(format!(
                "{} ({name}) new, {} ({})",
                n.id,
                word(n.healthy),
                n.state
            )),
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| n.id == o.id)) {
        out.push(format!("{} gone from the bus", o.id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{apex, function, one_ready_tpu};
    use crate::model::{Attr, Status};

    #[test]
    fn health_follows_the_readiness_rules() {
        let mut inv = one_ready_tpu();
        inv.pcie.push(function(1));
        inv.apex.push(apex(1));
        let t = tpus(&inv);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].id, "0000:03:00.0");
        assert!(t.iter().all(|d| d.healthy));
        assert_eq!(t[1].node.as_deref(), Some("/dev/apex_1"));
        inv.apex[1].status = Attr::Value(Status::Lamed);
        let lamed = tpus(&inv);
        assert!(!lamed[1].healthy && lamed[1].state == "status-lamed");
        assert_eq!(
            health_changes(&t, &lamed),
            ["0000:04:00.0 (/dev/apex_1) Healthy -> Unhealthy (status-lamed)"]
        );
        // A function without its class device stays listed, unhealthy, with no node.
        inv.pcie[1].apex = None;
        inv.pcie[1].numa_node = Attr::Value(Some(1));
        let t = tpus(&inv);
        assert_eq!((t[1].healthy, t[1].node.clone()), (false, None));
        assert_eq!((t[0].numa_node, t[1].numa_node), (None, Some(1)));
    }
}

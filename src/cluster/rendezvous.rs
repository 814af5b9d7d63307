//! Weighted rendezvous (highest random weight) hashing: which live node analyses each camera.
//!
//! Every node computes the same answer from the same inputs (the live nodes with their capacity,
//! the cameras with their frame rate), with no coordination. A node's score for a camera is
//! `-weight / ln(u)` where `u` in (0, 1) hashes the pair, so a node gets a share of the cameras
//! proportional to its weight, and a join or a loss moves only the cameras that must move: on a
//! join, only cameras that now go to the new node; on a loss, only the lost node's cameras.
//!
//! Capacity spills: cameras are placed in a fixed order (by id) and a camera whose best node has
//! no frames/s left goes to the next best that has; when every node is full it goes to its best
//! node anyway (overload shows in the metrics rather than a camera left unanalysed). The minimal
//! movement above holds while no node is over its capacity.

use std::collections::HashMap;

/// A node that may be given cameras.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    /// Frames/s the node can analyse: its weight and its budget.
    pub capacity_fps: f64,
}

/// A camera to place, with the frames/s it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub id: String,
    pub fps: f64,
}

/// The owner of each camera, by id. Empty when there is no candidate.
pub fn assign(cameras: &[Demand], nodes: &[Candidate]) -> HashMap<String, String> {
    let mut owners = HashMap::with_capacity(cameras.len());
    if nodes.is_empty() {
        return owners;
    }
    let mut order: Vec<&Demand> = cameras.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let mut left: Vec<f64> = nodes.iter().map(|n| n.capacity_fps).collect();
    let mut ranked: Vec<(f64, usize)> = Vec::with_capacity(nodes.len());
    for camera in order {
        ranked.clear();
        ranked.extend(nodes.iter().enumerate().map(|(i, n)| (score(&camera.id, &n.id, n.capacity_fps), i)));
        // Highest score first; ties (practically impossible) by node id for determinism.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| nodes[a.1].id.cmp(&nodes[b.1].id)));
        let chosen = ranked.iter().find(|(_, i)| left[*i] >= camera.fps).unwrap_or(&ranked[0]).1;
        left[chosen] -= camera.fps;
        owners.insert(camera.id.clone(), nodes[chosen].id.clone());
    }
    owners
}

/// The node's weighted score for the camera: higher wins.
fn score(camera: &str, node: &str, weight: f64) -> f64 {
    let h = mix(fnv1a(camera.as_bytes()) ^ mix(fnv1a(node.as_bytes())));
    // 53 random bits as a float in (0, 1): never 0, so the logarithm is finite and negative.
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight.max(f64::MIN_POSITIVE) / u.ln()
}

/// FNV-1a, 64 bits: stable across builds and platforms (the standard hasher is not promised
/// to be), so nodes of different versions agree during a rolling update.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cameras(n: usize, fps: f64) -> Vec<Demand> {
        (0..n).map(|i| Demand { id: format!("cam-{i:05}"), fps }).collect()
    }

    fn nodes(ids: &[&str], capacity: f64) -> Vec<Candidate> {
        ids.iter().map(|id| Candidate { id: id.to_string(), capacity_fps: capacity }).collect()
    }

    fn per_node(owners: &HashMap<String, String>) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for node in owners.values() {
            *counts.entry(node.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn same_inputs_same_owners_in_any_order() {
        let cams = cameras(500, 1.0);
        let a = assign(&cams, &nodes(&["a", "b", "c"], 1e9));
        let mut reversed_cams = cams.clone();
        reversed_cams.reverse();
        let b = assign(&reversed_cams, &nodes(&["c", "a", "b"], 1e9));
        assert_eq!(a, b);
        assert_eq!(a.len(), 500);
    }

    #[test]
    fn a_join_moves_only_cameras_to_the_new_node() {
        let cams = cameras(10_000, 1.0);
        let before = assign(&cams, &nodes(&["a", "b", "c"], 1e9));
        let after = assign(&cams, &nodes(&["a", "b", "c", "d"], 1e9));
        let moved: Vec<_> = cams.iter().filter(|c| before[&c.id] != after[&c.id]).collect();
        assert!(moved.iter().all(|c| after[&c.id] == "d"), "a camera moved between old nodes");
        // Equal weights: about a quarter moves.
        assert!((2_200..2_800).contains(&moved.len()), "{} moved", moved.len());
    }

    #[test]
    fn a_loss_moves_only_the_lost_nodes_cameras() {
        let cams = cameras(10_000, 1.0);
        let before = assign(&cams, &nodes(&["a", "b", "c", "d"], 1e9));
        let after = assign(&cams, &nodes(&["a", "b", "d"], 1e9));
        for camera in &cams {
            if before[&camera.id] != "c" {
                assert_eq!(before[&camera.id], after[&camera.id], "{} moved", camera.id);
            }
        }
        assert!(!after.values().any(|n| n == "c"));
    }

    #[test]
    fn shares_follow_the_weights() {
        let cams = cameras(20_000, 0.0);
        let mut weighted = nodes(&["small", "big"], 100.0);
        weighted[1].capacity_fps = 300.0;
        let counts = per_node(&assign(&cams, &weighted));
        let big_share = counts["big"] as f64 / 20_000.0;
        assert!((0.72..0.78).contains(&big_share), "big got {big_share}");
    }

    #[test]
    fn a_full_node_spills_to_the_next() {
        // 100 cameras of 1 frame/s on two nodes of 50: hashing alone would not split them
        // exactly; the budget does.
        let cams = cameras(100, 1.0);
        let counts = per_node(&assign(&cams, &nodes(&["a", "b"], 50.0)));
        assert_eq!((counts["a"], counts["b"]), (50, 50), "{counts:?}");
        let unbudgeted = per_node(&assign(&cams, &nodes(&["a", "b"], 1e9)));
        assert_ne!(unbudgeted["a"], 50, "pick camera names hashing unevenly: {unbudgeted:?}");
        // Everyone full: cameras still get an owner.
        let full = assign(&cams, &nodes(&["a", "b"], 5.0));
        assert_eq!(full.len(), 100);
    }

    #[test]
    fn no_node_no_owner() {
        assert!(assign(&cameras(3, 1.0), &[]).is_empty());
    }
}

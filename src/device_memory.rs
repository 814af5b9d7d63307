//! How full each inference device's memory is (`gpu_memory_utilization_percent`).
//!
//! A CUDA device is read through NVML (`libnvidia-ml`, loaded at run time, so the binary runs
//! where there is no NVIDIA driver). The CPU "device" is the host: the process' resident memory
//! against its memory limit (the cgroup's `memory.max` when it has one, else the machine's RAM),
//! which is what an out-of-memory kill is decided on.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

/// NVML, initialised once; `None` where no NVIDIA driver is installed.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// Used memory of `device` ("cpu" or "cuda:N", as `detector::device_name` names it), in percent;
/// `None` when it cannot be read.
pub fn utilization_percent(device: &str) -> Option<f64> {
    match device.strip_prefix("cuda:") {
        Some(index) => {
            let index: u32 = index.parse().ok()?;
            let info = nvml()?.device_by_index(index).ok()?.memory_info().ok()?;
            percent(info.used, info.total)
        }
        None if device == "cpu" => {
            let page = 4096; // statm counts pages; x86_64 and aarch64 Linux use 4 KiB by default.
            let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
            let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            percent(resident * page, host_memory_limit()?)
        }
        None => None,
    }
}

fn percent(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

/// The cgroup v2 memory limit of this process, else the machine's total memory, in bytes.
fn host_memory_limit() -> Option<u64> {
    let cgroup_limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    cgroup_limit.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_memory_of_this_process_is_a_small_share() {
        let used = utilization_percent("cpu").expect("Linux /proc is readable");
        assert!(used > 0.0 && used < 100.0, "{used}");
        assert_eq!(utilization_percent("tpu:0"), None);
        assert_eq!(utilization_percent("cuda:x"), None);
    }
}

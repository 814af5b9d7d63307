//! How full each inference device's memory is (`gpu_memory_utilization_percent`).
//!
//! A CUDA device is read through NVML (`libnvidia-ml`, loaded at run time, so the binary runs
//! where there is no NVIDIA driver). The CPU "device" is the host: the process' resident memory
//! against its memory limit (its cgroup's, v2 or v1, when lower than the machine's RAM), which is
//! what an out-of-memory kill is decided on.

use std::sync::OnceLock;

use nvml_wrapper::Nvml;

/// NVML, initialised once; `None` where no NVIDIA driver is installed.
fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().ok()).as_ref()
}

/// Used memory of `device` ("cpu" or "cuda:N", as `detector::device_name` names it), in percent;
/// `None` when it cannot be read. A CUDA device is looked up by its index in NVML's order, which
/// is the CUDA order when `CUDA_DEVICE_ORDER=PCI_BUS_ID` and no `CUDA_VISIBLE_DEVICES` remaps it.
pub fn utilization_percent(device: &str) -> Option<f64> {
    match device.strip_prefix("cuda:") {
        Some(index) => {
            let info = cuda_memory(index)?;
            percent(info.used, info.total)
        }
        None if device == "cpu" => percent(process_resident_bytes()?, host_memory_limit()?),
        None => None,
    }
}

/// Memory of `device` still free for batches, in bytes: a CUDA device's free memory from NVML;
/// for the CPU, what the process' resident memory leaves of `cpu_budget` (`None` without a
/// budget). `None` when it cannot be read: the batch is then bounded by out-of-memory errors only.
pub fn free_bytes(device: &str, cpu_budget: Option<u64>) -> Option<u64> {
    match device.strip_prefix("cuda:") {
        Some(index) => Some(cuda_memory(index)?.free),
        None => Some(cpu_budget?.saturating_sub(process_resident_bytes()?)),
    }
}

/// NVML's memory figures of the CUDA device with index `index` (see `utilization_percent`).
fn cuda_memory(index: &str) -> Option<nvml_wrapper::struct_wrappers::device::MemoryInfo> {
    nvml()?.device_by_index(index.parse().ok()?).ok()?.memory_info().ok()
}

/// This process' resident memory, in bytes.
fn process_resident_bytes() -> Option<u64> {
    resident_bytes(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn percent(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 * 100.0 / total as f64)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (the kernel reports kB, whatever the page size).
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// The memory this process may use: its cgroup's limit (v2 or v1) when lower than the machine's
/// memory, else the machine's memory, in bytes.
fn host_memory_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let total = line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = cgroup_limit_files(&cgroup)
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok().and_then(|text| parse_limit(&text)));
    Some(limit.map_or(total, |limit| limit.min(total)))
}

/// The files that may hold this process' memory limit, most specific first, from the text of
/// `/proc/self/cgroup`: cgroup v2 (`0::/path`) and v1 (`N:...memory...:/path`), each at the
/// process' own cgroup and at the mount's root (where a cgroup namespace puts it).
fn cgroup_limit_files(proc_cgroup: &str) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if hierarchy == "0" && controllers.is_empty() {
            files.push(std::path::Path::new("/sys/fs/cgroup").join(path).join("memory.max"));
            files.push("/sys/fs/cgroup/memory.max".into());
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(std::path::Path::new("/sys/fs/cgroup/memory").join(path).join("memory.limit_in_bytes"));
            files.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
        }
    }
    files
}

/// A limit file's value; `max` (v2) is no limit.
fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_are_found_for_v2_and_v1() {
        let v2 = cgroup_limit_files("0::/system.slice/its.service\n");
        assert_eq!(v2[0], std::path::Path::new("/sys/fs/cgroup/system.slice/its.service/memory.max"));
        assert_eq!(v2[1], std::path::Path::new("/sys/fs/cgroup/memory.max"));
        let v1 = cgroup_limit_files("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n");
        assert_eq!(v1[0], std::path::Path::new("/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(resident_bytes("Name:\tits\nVmRSS:\t  2048 kB\n"), Some(2 << 20));
    }

    #[test]
    fn the_host_memory_of_this_process_is_a_small_share() {
        let used = utilization_percent("cpu").expect("Linux /proc is readable");
        assert!(used > 0.0 && used < 100.0, "{used}");
        assert_eq!(utilization_percent("tpu:0"), None);
        assert_eq!(utilization_percent("cuda:x"), None);
    }
}

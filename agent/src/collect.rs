//! Host facts from sysinfo: inventory for `birth`, resources for `hb`. Refreshes only CPU usage,
//! memory and disks (never the process list), so a sample costs well under a millisecond.

use std::path::Path;

use dozor_proto::{DiskInfo, DiskUsage};
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

use crate::os;

/// Longest string the protocol accepts in a field.
const MAX_STR: usize = 256;
/// Most disks the protocol accepts in one message.
const MAX_DISKS: usize = 64;

/// File systems that are not storage anyone runs out of. sysinfo already skips proc, sysfs,
/// cgroup, devpts and network file systems (whose `statvfs` may hang).
const PSEUDO_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "overlay",
    "squashfs",
    "efivarfs",
    "fuse.portal",
    "fuse.gvfsd-fuse",
    "nsfs",
    "tracefs",
    "debugfs",
    "securityfs",
    "configfs",
    "binfmt_misc",
    "autofs",
    "iso9660",
    "udf",
];

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// sysinfo could not initialize on this OS.
    #[error("system information unavailable: {0}")]
    System(#[from] sysinfo::Error),
}

/// Inventory of the host, for `birth`.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub hostname: String,
    pub os_name: String,
    pub os_version: String,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub mem_total_bytes: u64,
    pub disks: Vec<DiskInfo>,
    /// Unix seconds.
    pub boot_time: i64,
    pub boot_id: String,
}

/// One sample of the host's resources, for `hb`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub inventory: Inventory,
    pub uptime_secs: u64,
    pub cpu_pct: f32,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub load: Option<[f32; 3]>,
    pub disks: Vec<DiskUsage>,
}

/// Owns the sysinfo state between samples (CPU usage is a difference between refreshes).
pub struct Collector {
    sys: System,
    disks: Disks,
    boot_time: i64,
    boot_id: String,
}

impl Collector {
    /// Takes the first CPU reading; the first [`Collector::sample`] reports usage since now.
    /// `state_dir` keeps the derived boot id where the OS has none (see [`derived_boot_id`]).
    pub fn new(state_dir: &Path) -> Result<Collector, CollectError> {
        let mut sys = System::new()?;
        sys.refresh_cpu_list(CpuRefreshKind::nothing().with_usage());
        sys.refresh_cpu_usage();
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let disks = Disks::new()?;
        let boot_time = System::boot_time()
            .ok()
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(0);
        let boot_id = os::boot_id()
            .map(|s| clean(&s))
            .unwrap_or_else(|| derived_boot_id(&state_dir.join(BOOT_FILE), boot_time));
        Ok(Collector {
            sys,
            disks,
            boot_time,
            boot_id,
        })
    }

    /// Refreshes CPU usage, memory and disks and returns the figures.
    pub fn sample(&mut self) -> Sample {
        self.sys.refresh_cpu_usage();
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing().with_storage().with_kind());

        let mut infos = Vec::new();
        let mut usage = Vec::new();
        let mut seen_devices: Vec<String> = Vec::new();
        for d in self.disks.iter() {
            let fs = d.file_system().to_string_lossy().into_owned();
            let mount = d.mount_point().to_string_lossy().into_owned();
            let device = d.name().to_string_lossy().into_owned();
            let total = d.total_space();
            if total == 0 || is_pseudo(&fs, &mount) {
                continue;
            }
            // Bind mounts and btrfs subvolumes show one device many times: report it once.
            if !device.is_empty() && seen_devices.contains(&device) {
                continue;
            }
            if infos.len() >= MAX_DISKS {
                break;
            }
            seen_devices.push(device);
            let used = total.saturating_sub(d.available_space());
            infos.push(DiskInfo {
                mount: clean(&mount),
                fs: clean(&fs),
                total_bytes: total,
            });
            usage.push(DiskUsage {
                mount: clean(&mount),
                total_bytes: total,
                used_bytes: used.min(total),
            });
        }

        let cpus = self.sys.cpus();
        let cpu_model = cpus
            .first()
            .map(|c| c.brand().trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(System::cpu_arch);
        let cpu_count = u32::try_from(cpus.len()).unwrap_or(u32::MAX).max(1);
        let mem_total = self.sys.total_memory();
        let mem_used = self.sys.used_memory().min(mem_total);
        let cpu = self.sys.global_cpu_usage();
        let cpu_pct = if cpu.is_finite() {
            cpu.clamp(0.0, 100.0)
        } else {
            0.0
        };

        let inventory = Inventory {
            hostname: clean(&os::hostname().unwrap_or_default()),
            os_name: clean(
                &System::long_os_version()
                    .or_else(|_| System::name())
                    .unwrap_or_default(),
            ),
            os_version: clean(&System::os_version().unwrap_or_default()),
            cpu_model: clean(&cpu_model),
            cpu_count,
            mem_total_bytes: mem_total,
            disks: infos,
            boot_time: self.boot_time,
            boot_id: self.boot_id.clone(),
        };
        Sample {
            inventory,
            uptime_secs: System::uptime().unwrap_or(0),
            cpu_pct,
            mem_used_bytes: mem_used,
            mem_total_bytes: mem_total,
            load: load_average(),
            disks: usage,
        }
    }
}

/// File in the data directory remembering the derived boot id.
const BOOT_FILE: &str = "boot_id";

/// A boot id for an OS without one (Windows): `boot-<boot time>`, remembered in `path` and
/// reused while the computed boot time stays within a minute of the remembered one. The boot
/// time is "now − uptime" and moves by a second between agent restarts; without this the
/// collector would see a reboot on every restart.
fn derived_boot_id(path: &Path, boot_time: i64) -> String {
    let remembered = std::fs::read_to_string(path).ok().and_then(|s| {
        let (t, id) = s.trim().split_once(' ')?;
        let t: i64 = t.parse().ok()?;
        ((t - boot_time).abs() <= 60 && !id.is_empty()).then(|| clean(id))
    });
    remembered.unwrap_or_else(|| {
        let id = format!("boot-{boot_time}");
        if let Err(e) = std::fs::write(path, format!("{boot_time} {id}\n")) {
            tracing::debug!(error = %e, "cannot remember the boot id");
        }
        id
    })
}

/// 1/5/15-minute load averages; `None` where the OS has none (Windows).
fn load_average() -> Option<[f32; 3]> {
    if cfg!(windows) {
        return None;
    }
    let l = System::load_average().ok()?;
    let v = [l.one as f32, l.five as f32, l.fifteen as f32];
    v.iter()
        .all(|x| x.is_finite() && *x >= 0.0 && *x < 1e6)
        .then_some(v)
}

fn is_pseudo(fs: &str, mount: &str) -> bool {
    let under =
        |dir: &str| mount == dir || mount.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    PSEUDO_FS.contains(&fs)
        || ["/snap", "/dev", "/proc", "/sys", "/run"]
            .into_iter()
            .any(under)
}

/// Makes a string acceptable to the protocol: no control characters, at most 256 bytes.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_STR));
    for c in s.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_STR {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_machine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Collector::new(dir.path()).expect("sysinfo works here");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = c.sample();
        assert!(s.uptime_secs > 0);
        assert!(s.mem_total_bytes > 0);
        assert!(s.mem_used_bytes <= s.mem_total_bytes);
        assert!((0.0..=100.0).contains(&s.cpu_pct));
        assert!(s.inventory.cpu_count >= 1);
        assert!(s.inventory.boot_time > 1_000_000_000);
        assert!(!s.inventory.boot_id.is_empty());
        assert!(s.load.is_some());
        assert!(s.disks.iter().all(|d| d.used_bytes <= d.total_bytes));
        assert!(s.disks.iter().all(|d| !d.mount.starts_with("/proc")));
        assert!(s.inventory.disks.len() <= MAX_DISKS);
    }

    #[test]
    fn derived_boot_id_survives_jitter_and_changes_on_reboot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(BOOT_FILE);
        let a = derived_boot_id(&path, 1_750_000_000);
        assert_eq!(a, "boot-1750000000");
        assert_eq!(derived_boot_id(&path, 1_750_000_001), a);
        assert_eq!(derived_boot_id(&path, 1_749_999_999), a);
        let b = derived_boot_id(&path, 1_750_003_600);
        assert_ne!(b, a);
        assert_eq!(derived_boot_id(&path, 1_750_003_601), b);
    }

    #[test]
    fn cleans_strings() {
        assert_eq!(clean("  a\tb\nc "), "a b c");
        let long = "я".repeat(200);
        let c = clean(&long);
        assert!(c.len() <= MAX_STR && c.is_char_boundary(c.len()));
    }

    #[test]
    fn pseudo_filesystems_are_skipped() {
        assert!(is_pseudo("tmpfs", "/tmp"));
        assert!(is_pseudo("ext4", "/run/user/1000"));
        assert!(!is_pseudo("ext4", "/"));
        assert!(!is_pseudo("xfs", "/home"));
        assert!(!is_pseudo("ntfs", "C:\\"));
        assert!(!is_pseudo("ext4", "/devel"));
        assert!(is_pseudo("ext4", "/snap/core/1"));
    }
}

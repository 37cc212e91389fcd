//! The few OS-specific facts the agent needs (machine id, boot id, default paths), kept in one
//! small module so that the Windows build is a target, not a port.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// A stable identifier of this machine, as the OS keeps it; `None` if it cannot be read.
///
/// Linux: `/etc/machine-id` (or the D-Bus copy). Windows: the `MachineGuid` registry value.
/// Callers fall back to the host name. Cloned disk images share a machine id unless the image
/// was prepared for cloning (`systemd-machine-id-setup`, `sysprep`): set `host_id` then.
pub fn machine_id() -> Option<String> {
    imp::machine_id().filter(|s| !s.is_empty())
}

/// An identifier that changes on every boot of the OS, if the OS offers one (Linux does).
pub fn boot_id() -> Option<String> {
    imp::boot_id().filter(|s| !s.is_empty())
}

/// The machine's host name, if known.
pub fn hostname() -> Option<String> {
    sysinfo::System::host_name()
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Where the agent keeps its spool when `data_dir` is not configured.
pub fn default_data_dir() -> PathBuf {
    imp::default_data_dir()
}

/// Creates `path` (which must not exist) readable and writable by its owner only: mode 0600
/// on Unix. On Windows the file inherits the data directory's ACL, which the installer
/// restricts to SYSTEM and Administrators.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Makes sure an existing file is not readable by group or others (Unix: mode 0600). Returns
/// the previous mode when it had to be changed.
pub fn ensure_private(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(Some(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(None)
}

/// Flushes a directory entry change (a rename) to disk where the OS allows it.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(not(windows))]
mod imp {
    use std::path::PathBuf;

    fn read_trimmed(path: &str) -> Option<String> {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    }

    pub(super) fn machine_id() -> Option<String> {
        read_trimmed("/etc/machine-id")
            .filter(|s| !s.is_empty())
            .or_else(|| read_trimmed("/var/lib/dbus/machine-id"))
    }

    pub(super) fn boot_id() -> Option<String> {
        read_trimmed("/proc/sys/kernel/random/boot_id")
    }

    pub(super) fn default_data_dir() -> PathBuf {
        PathBuf::from("/var/lib/dozor-agent")
    }
}

#[cfg(windows)]
mod imp {
    use std::path::PathBuf;

    /// Reads `HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid` through `reg.exe` (present on
    /// every Windows since XP), which keeps the agent free of a registry crate.
    pub fn machine_id() -> Option<String> {
        let out = std::process::Command::new("reg")
            .args([
                "query",
                r"HKLM\SOFTWARE\Microsoft\Cryptography",
                "/v",
                "MachineGuid",
                "/reg:64",
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.trim_start().starts_with("MachineGuid"))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_owned)
    }

    /// Windows has no boot id every version offers; the caller derives one from the boot time.
    pub fn boot_id() -> Option<String> {
        None
    }

    pub fn default_data_dir() -> PathBuf {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(base).join("dozor-agent")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_facts_are_there() {
        // The build and test machines run Linux with systemd or at least a /proc.
        if cfg!(target_os = "linux") {
            assert!(boot_id().is_some());
        }
        assert!(!default_data_dir().as_os_str().is_empty());
    }
}

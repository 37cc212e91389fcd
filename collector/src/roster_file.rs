//! The roster the collector last loaded, kept in its data dir as `roster.toml` (every value
//! explicit, whatever form the region's file had): the `report` subcommand and a collector
//! started without `roster.path` use it, so a report equals the web page.
//!
//! Written atomically (a temporary file, fsync, rename, fsync of the directory): a power cut
//! leaves the old roster or the new one, never half of one.

use crate::roster::{Roster, RosterError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file name in the data dir.
pub const FILE: &str = "roster.toml";

/// `data_dir/roster.toml`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Keeps `roster` as the data dir's roster.
pub fn save(data_dir: &Path, roster: &Roster) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let path = path(data_dir);
    let tmp = data_dir.join(format!(".{FILE}.tmp"));
    let text = format!(
        "# The roster dozor-collector last loaded (written by it; edit the region's roster file \
         instead).\n{}",
        roster.to_toml()
    );
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    #[cfg(unix)]
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// The data dir's roster; `None` when the collector never kept one there.
pub fn load(data_dir: &Path) -> Result<Option<Roster>, RosterError> {
    let path = path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    Roster::load(&path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_roster_reads_back_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        assert!(load(&d).unwrap().is_none());
        let csv = "ОИД МО;МО;Подразделение;План АРМ\r\n1.2.3;Поликлиника;А;10\r\n1.2.3;Поликлиника;Б;5\r\n";
        let r = Roster::from_bytes(csv.as_bytes(), "r.csv").unwrap();
        save(&d, &r).unwrap();
        assert_eq!(load(&d).unwrap().unwrap().mos, r.mos);
        let r2 = Roster::from_toml("[[mo]]\noid = \"9\"\nname = \"Другая\"\n", "t").unwrap();
        save(&d, &r2).unwrap();
        assert_eq!(load(&d).unwrap().unwrap().mos, r2.mos);
        // Nothing left beside it.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE]);
    }
}

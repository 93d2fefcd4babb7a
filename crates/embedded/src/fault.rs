//! Storage faults for tests (feature `fault-injection`): [`SimulatedDisk`], a file system in
//! memory that can lose power or run out of space under the real broker.
//!
//! The broker's storage code talks to a [`Disk`]; [`EmbeddedBroker::open_simulated`] gives it
//! this one instead of the operating system's. It keeps, for every file, what was written
//! (what the page cache would hold) apart from what was synced (what the platters hold), and
//! for every directory, its entries as they are apart from the entries as of its last sync. So
//! it can answer, at any moment, "what would a machine find after a power loss now?" — the
//! question SQLite's crash tests (`test6.c`) ask of its VFS. [`SimulatedDisk::crash_after`]
//! makes the power fail after a given number of disk operations: that operation and every later
//! one fail, so the broker stops where a real machine would. [`SimulatedDisk::after_power_loss`]
//! then builds the disk the next boot sees:
//!
//! - a file keeps what was synced, plus a random prefix of what was appended since (a real
//!   kernel may have written back some of the dirty pages), whose last bytes may be garbage (a
//!   sector half written);
//! - a file cut or overwritten since its last sync comes back either as synced or as written;
//! - a directory keeps its entries as of its last sync, plus a random prefix of the creations,
//!   renames and removals made since (metadata reaches the disk in order, as with a
//!   journalling file system, but only a sync says how far);
//! - a directory created since its parent's last sync vanishes with everything in it.
//!
//! Every choice comes from the seed, so a failing case is reproduced by its seed. With
//! [`SimulatedDisk::set_capacity`], writes beyond the capacity fail with `ENOSPC` after writing
//! what fits, as a full file system does.
//!
//! Limits of the model: it has one level of caching (no disk write cache that lies about
//! syncs), reads see what was written (as on a real kernel), and a file's data and its size
//! are synced together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::broker::EmbeddedBroker;
use crate::disk::{Disk, DiskFile, LockGuard};
use crate::options::Options;
use crate::storage::OpenError;

/// Linux's `ENOSPC`: what a write to a full file system fails with.
const ENOSPC: i32 = 28;
/// At most this many bytes at the end of a surviving unsynced tail are replaced by garbage.
const TORN_GARBAGE_BYTES_MAX: usize = 64;

/// A file system in memory that can lose power or fill up. See the module docs. Cheap to
/// clone; clones share one disk.
#[derive(Clone, Default)]
pub struct SimulatedDisk {
    sim: Arc<Mutex<Sim>>,
}

impl std::fmt::Debug for SimulatedDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sim = self.lock();
        f.debug_struct("SimulatedDisk")
            .field("ops", &sim.ops)
            .field("crashed", &sim.crashed)
            .field("files", &sim.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Sim {
    /// Contents by file number; a file stays here after its last name is gone, so that a
    /// removal that was never synced can be undone by a power loss.
    files: HashMap<u64, SimFile>,
    next_file: u64,
    /// Names as they are now.
    entries: BTreeMap<PathBuf, u64>,
    /// Names as of the last sync of their directory.
    durable_entries: BTreeMap<PathBuf, u64>,
    /// Changes of names since the last sync of their directory, in order.
    dir_log: Vec<DirOp>,
    /// Directories created here, and whether their parent was synced since. A directory not
    /// listed is taken to exist durably (the test's own directories).
    dirs: BTreeMap<PathBuf, bool>,
    /// Files locked by [`Disk::lock`].
    locks: BTreeSet<PathBuf>,
    /// Disk operations that change something (writes, syncs, creations, renames, ...).
    ops: u64,
    /// The power fails at this operation.
    crash_at: Option<u64>,
    /// Set once the power failed: every call fails from then on.
    crashed: bool,
    /// Bytes the files may hold at most.
    capacity: Option<u64>,
    /// Bytes the named files hold.
    used: u64,
    /// Completed syncs of log files (`log-*`).
    log_syncs: u64,
    /// Power losses to record (operation number → seed); see `plan_power_losses`.
    planned: BTreeMap<u64, u64>,
    /// The images recorded for them.
    images: Vec<PowerLossImage>,
}

#[derive(Clone, Default)]
struct SimFile {
    /// What was written: what a read returns.
    data: Vec<u8>,
    /// What was synced: what survives a power loss for sure.
    durable: Vec<u8>,
    /// The lowest offset changed since the last sync other than by appending past `durable`.
    dirty_from: usize,
}

impl SimFile {
    fn sync(&mut self) {
        if self.dirty_from >= self.durable.len() && self.data.len() >= self.durable.len() {
            let synced = self.durable.len();
            self.durable.extend_from_slice(&self.data[synced..]);
        } else {
            self.durable.clone_from(&self.data);
        }
        self.dirty_from = self.durable.len();
    }
}

#[derive(Clone)]
enum DirOp {
    Create { path: PathBuf, file: u64 },
    Rename { from: PathBuf, to: PathBuf },
    Remove { path: PathBuf },
}

impl DirOp {
    fn dir(&self) -> &Path {
        let path = match self {
            DirOp::Create { path, .. } | DirOp::Remove { path } => path,
            DirOp::Rename { to, .. } => to,
        };
        path.parent().unwrap_or(Path::new(""))
    }

    fn apply(&self, entries: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Create { path, file } => {
                entries.insert(path.clone(), *file);
            }
            DirOp::Rename { from, to } => {
                if let Some(file) = entries.remove(from) {
                    entries.insert(to.clone(), file);
                }
            }
            DirOp::Remove { path } => {
                entries.remove(path);
            }
        }
    }
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: the disk is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file on the simulated disk", path.display()),
    )
}

impl Sim {
    /// Counts one operation that changes the disk; fails if the power is (now) off.
    fn op(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(power_lost());
        }
        if let Some(seed) = self.planned.remove(&(self.ops + 1)) {
            let image = self.image(seed);
            self.images.push(PowerLossImage {
                op: self.ops + 1,
                log_syncs: self.log_syncs,
                disk: SimulatedDisk {
                    sim: Arc::new(Mutex::new(image)),
                },
            });
        }
        self.ops += 1;
        if self.crash_at.is_some_and(|at| self.ops >= at) {
            self.crashed = true;
            return Err(power_lost());
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(power_lost())
        } else {
            Ok(())
        }
    }

    fn file_of(&self, path: &Path) -> io::Result<u64> {
        self.entries
            .get(path)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn recompute_used(&mut self) {
        self.used = self
            .entries
            .values()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|id| self.files[id].data.len() as u64)
            .sum();
    }

    fn log_dir_op(&mut self, op: DirOp) {
        op.apply(&mut self.entries);
        self.dir_log.push(op);
        self.recompute_used();
    }
}

impl SimulatedDisk {
    /// An empty disk with no capacity limit and no power failure planned.
    pub fn new() -> Self {
        SimulatedDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the power fail at the `n`-th disk operation from now (1 = the next one): that
    /// operation and every later one fail. Operations are writes, syncs, truncations,
    /// creations, renames and removals of files, syncs and creations of directories.
    pub fn crash_after(&self, n: u64) {
        let mut sim = self.lock();
        sim.crash_at = Some(sim.ops + n.max(1));
    }

    /// Makes the power fail now.
    pub fn crash_now(&self) {
        self.lock().crashed = true;
    }

    /// True once the power failed.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Disk operations so far (see [`SimulatedDisk::crash_after`]).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Completed syncs of log files so far. A change written before such a sync is durable:
    /// a test compares this count at the time a call returned with the count at the power
    /// loss to know what the durability setting promised.
    pub fn log_syncs(&self) -> u64 {
        self.lock().log_syncs
    }

    /// Limits the bytes the files may hold (`None`: no limit). A write that would go beyond
    /// writes what fits and then fails with `ENOSPC`; lowering the limit below what is used
    /// only stops later writes.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes the files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used
    }

    /// The content of the file at `path`, as a read would return it.
    pub fn read_file(&self, path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        Disk::read(self, path.as_ref())
    }

    /// Puts a file at `path` holding `bytes`, synced, its entry synced: a test's way to hand
    /// the broker a damaged or hand-made data file.
    pub fn write_file(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let path = path.as_ref();
        let mut file = self.create(path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        self.sync_dir(path.parent().unwrap_or(Path::new("/")))
    }

    /// The names of the files now on the disk, with their lengths.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let sim = self.lock();
        sim.entries
            .iter()
            .map(|(path, id)| (path.clone(), sim.files[id].data.len() as u64))
            .collect()
    }

    /// The disk as the next boot finds it if the power failed now, with every choice the
    /// model leaves open (see the module docs) drawn from `seed`. The original is unchanged;
    /// the returned disk is fully synced, with no failure planned and no capacity limit.
    pub fn after_power_loss(&self, seed: u64) -> SimulatedDisk {
        SimulatedDisk {
            sim: Arc::new(Mutex::new(self.lock().image(seed))),
        }
    }

    /// Plans power losses without stopping anything: just before operation `op` (counted as in
    /// [`SimulatedDisk::crash_after`], from the disk's creation), the disk records what the
    /// next boot would find if the power failed then ([`SimulatedDisk::after_power_loss`] with
    /// `seed`), and carries on. One run of a workload so yields many crash points, each checked
    /// against everything the workload saw before and after it.
    pub fn plan_power_losses(&self, points: impl IntoIterator<Item = (u64, u64)>) {
        self.lock().planned.extend(points);
    }

    /// The images recorded for the planned power losses so far, in order, removed from the
    /// disk.
    pub fn take_power_losses(&self) -> Vec<PowerLossImage> {
        std::mem::take(&mut self.lock().images)
    }
}

/// What the disk held at a planned power loss (see [`SimulatedDisk::plan_power_losses`]).
#[derive(Debug)]
pub struct PowerLossImage {
    /// The operation the power failed before.
    pub op: u64,
    /// Completed syncs of log files before it ([`SimulatedDisk::log_syncs`]).
    pub log_syncs: u64,
    /// The disk as the next boot finds it.
    pub disk: SimulatedDisk,
}

impl Sim {
    /// The disk as the next boot finds it if the power failed now; see the module docs.
    fn image(&self, seed: u64) -> Sim {
        let sim = self;
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut entries = sim.durable_entries.clone();
        let survived = rng.usize(0..=sim.dir_log.len());
        for op in &sim.dir_log[..survived] {
            op.apply(&mut entries);
        }
        let lost_dirs: Vec<&PathBuf> = sim
            .dirs
            .iter()
            .filter(|(_, durable)| !**durable)
            .map(|(dir, _)| dir)
            .collect();
        entries.retain(|path, _| !lost_dirs.iter().any(|dir| path.starts_with(dir)));

        let mut files = HashMap::new();
        for &id in entries.values() {
            if files.contains_key(&id) {
                continue;
            }
            let file = &sim.files[&id];
            let synced = file.durable.len();
            let content = if file.dirty_from >= synced && file.data.len() >= synced {
                let tail = &file.data[synced..];
                let kept = match rng.u8(0..3) {
                    0 => 0,
                    1 => tail.len(),
                    _ => rng.usize(0..=tail.len()),
                };
                let mut content = file.durable.clone();
                content.extend_from_slice(&tail[..kept]);
                if kept > 0 && rng.u8(0..4) == 0 {
                    let garbage = rng.usize(1..=kept.min(TORN_GARBAGE_BYTES_MAX));
                    let len = content.len();
                    for byte in &mut content[len - garbage..] {
                        *byte = rng.u8(..);
                    }
                }
                content
            } else if rng.bool() {
                file.durable.clone()
            } else {
                file.data.clone()
            };
            files.insert(
                id,
                SimFile {
                    dirty_from: content.len(),
                    durable: content.clone(),
                    data: content,
                },
            );
        }
        let dirs = sim
            .dirs
            .iter()
            .filter(|(_, durable)| **durable)
            .map(|(dir, _)| (dir.clone(), true))
            .collect();
        let mut rebooted = Sim {
            files,
            next_file: sim.next_file,
            durable_entries: entries.clone(),
            entries,
            dirs,
            ..Sim::default()
        };
        rebooted.recompute_used();
        rebooted
    }
}

impl EmbeddedBroker {
    /// Opens the broker on data directory `dir` of a [`SimulatedDisk`] (feature
    /// `fault-injection`): the real broker, with its file-system calls going to the simulation.
    pub fn open_simulated(
        disk: &SimulatedDisk,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<EmbeddedBroker, OpenError> {
        EmbeddedBroker::open_on(Arc::new(disk.clone()), dir.as_ref(), options)
    }
}

/// A lock taken on the simulated disk, released on drop.
struct SimLock {
    sim: Arc<Mutex<Sim>>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut sim = self.sim.lock().unwrap_or_else(|p| p.into_inner());
        sim.locks.remove(&self.path);
    }
}

impl Disk for SimulatedDisk {
    fn create_dir(&self, dir: &Path) -> io::Result<bool> {
        let mut sim = self.lock();
        sim.alive()?;
        if sim.dirs.contains_key(dir) {
            return Ok(false);
        }
        sim.op()?;
        sim.dirs.insert(dir.to_owned(), false);
        Ok(true)
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let mut sim = self.lock();
        sim.alive()?;
        if !sim.entries.contains_key(path) {
            sim.op()?;
            let id = sim.next_file;
            sim.next_file += 1;
            sim.files.insert(id, SimFile::default());
            sim.log_dir_op(DirOp::Create {
                path: path.to_owned(),
                file: id,
            });
        }
        if !sim.locks.insert(path.to_owned()) {
            return Ok(None);
        }
        Ok(Some(LockGuard::new(SimLock {
            sim: self.sim.clone(),
            path: path.to_owned(),
        })))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let sim = self.lock();
        sim.alive()?;
        Ok(sim
            .entries
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let sim = self.lock();
        sim.alive()?;
        let id = sim.file_of(path)?;
        Ok(sim.files[&id].data.clone())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut sim = self.lock();
        sim.alive()?;
        sim.op()?;
        let id = match sim.entries.get(path) {
            Some(&id) => {
                let file = sim.files.get_mut(&id).expect("named files exist");
                file.data.clear();
                file.dirty_from = 0;
                sim.recompute_used();
                id
            }
            None => {
                let id = sim.next_file;
                sim.next_file += 1;
                sim.files.insert(id, SimFile::default());
                sim.log_dir_op(DirOp::Create {
                    path: path.to_owned(),
                    file: id,
                });
                id
            }
        };
        Ok(Box::new(SimHandle {
            sim: self.sim.clone(),
            id,
            is_log: is_log(path),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let sim = self.lock();
        sim.alive()?;
        let id = sim.file_of(path)?;
        Ok(Box::new(SimHandle {
            sim: self.sim.clone(),
            id,
            is_log: is_log(path),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.alive()?;
        sim.file_of(from)?;
        sim.op()?;
        sim.log_dir_op(DirOp::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.alive()?;
        sim.file_of(path)?;
        sim.op()?;
        sim.log_dir_op(DirOp::Remove {
            path: path.to_owned(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut sim = self.lock();
        sim.alive()?;
        sim.op()?;
        let sim = &mut *sim;
        sim.durable_entries
            .retain(|path, _| path.parent() != Some(dir));
        for (path, id) in &sim.entries {
            if path.parent() == Some(dir) {
                sim.durable_entries.insert(path.clone(), *id);
            }
        }
        sim.dir_log.retain(|op| op.dir() != dir);
        for (child, durable) in sim.dirs.iter_mut() {
            if child.parent() == Some(dir) {
                *durable = true;
            }
        }
        Ok(())
    }
}

fn is_log(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("log-"))
}

/// An open file of the simulated disk; writes go to the file's end.
struct SimHandle {
    sim: Arc<Mutex<Sim>>,
    id: u64,
    is_log: bool,
}

impl SimHandle {
    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.sim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut sim = self.lock();
        sim.op()?;
        sim.files
            .get_mut(&self.id)
            .expect("open files exist")
            .sync();
        if self.is_log {
            sim.log_syncs += 1;
        }
        Ok(())
    }
}

impl Write for SimHandle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut sim = self.lock();
        sim.op()?;
        let room = sim
            .capacity
            .map_or(usize::MAX, |cap| cap.saturating_sub(sim.used) as usize);
        if room == 0 {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let n = buf.len().min(room);
        sim.files
            .get_mut(&self.id)
            .expect("open files exist")
            .data
            .extend_from_slice(&buf[..n]);
        sim.used += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DiskFile for SimHandle {
    fn sync_data(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.sync()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut sim = self.lock();
        sim.op()?;
        let file = sim.files.get_mut(&self.id).expect("open files exist");
        let len = usize::try_from(len).expect("simulated files fit in memory");
        file.data.resize(len, 0);
        file.dirty_from = file.dirty_from.min(len);
        sim.recompute_used();
        Ok(())
    }

    fn len(&self) -> u64 {
        self.lock().files[&self.id].data.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(disk: &SimulatedDisk, path: &str, bytes: &[u8], sync: bool) {
        let mut file = disk.create(Path::new(path)).unwrap();
        file.write_all(bytes).unwrap();
        if sync {
            file.sync_all().unwrap();
        }
    }

    #[test]
    fn only_synced_data_and_entries_are_sure_to_survive() {
        let disk = SimulatedDisk::new();
        disk.create_dir(Path::new("/d")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        write(&disk, "/d/synced", b"kept", true);
        disk.sync_dir(Path::new("/d")).unwrap();
        write(&disk, "/d/unsynced-entry", b"x", true);
        let mut seen_without = false;
        for seed in 0..64 {
            let after = disk.after_power_loss(seed);
            assert_eq!(after.read(Path::new("/d/synced")).unwrap(), b"kept");
            seen_without |= after.read(Path::new("/d/unsynced-entry")).is_err();
        }
        assert!(seen_without, "an entry never synced is lost in some runs");
    }

    #[test]
    fn an_unsynced_tail_survives_in_part_or_not_at_all() {
        let disk = SimulatedDisk::new();
        write(&disk, "/f", b"synced", true);
        disk.sync_dir(Path::new("/")).unwrap();
        let mut file = disk.open_append(Path::new("/f")).unwrap();
        file.write_all(b"-tail").unwrap();
        let mut lengths = BTreeSet::new();
        for seed in 0..200 {
            let content = disk.after_power_loss(seed).read(Path::new("/f")).unwrap();
            assert!(content.starts_with(b"synced"));
            lengths.insert(content.len());
        }
        assert!(lengths.contains(&6) && lengths.contains(&11) && lengths.len() > 2);
    }

    #[test]
    fn a_directory_vanishes_unless_its_parent_was_synced() {
        let disk = SimulatedDisk::new();
        disk.create_dir(Path::new("/new")).unwrap();
        write(&disk, "/new/f", b"data", true);
        disk.sync_dir(Path::new("/new")).unwrap();
        assert!(
            disk.after_power_loss(1)
                .list(Path::new("/new"))
                .unwrap()
                .is_empty()
        );
        disk.sync_dir(Path::new("/")).unwrap();
        assert_eq!(
            disk.after_power_loss(1).list(Path::new("/new")).unwrap(),
            ["f"]
        );
    }

    #[test]
    fn writes_beyond_the_capacity_fail_with_enospc_after_filling_it() {
        let disk = SimulatedDisk::new();
        disk.set_capacity(Some(10));
        let mut file = disk.create(Path::new("/f")).unwrap();
        let err = file.write_all(b"0123456789abc").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(file.len(), 10);
        file.truncate(4).unwrap();
        file.write_all(b"456789").unwrap();
        assert_eq!(disk.used_bytes(), 10);
    }

    #[test]
    fn after_the_crash_point_every_operation_fails() {
        let disk = SimulatedDisk::new();
        disk.crash_after(2);
        let mut file = disk.create(Path::new("/f")).unwrap();
        assert!(file.write_all(b"x").is_err());
        assert!(disk.crashed());
        assert!(disk.read(Path::new("/f")).is_err());
    }
}

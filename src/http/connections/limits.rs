//! How many connections may be open, in total and per client address, the table that
//! admits new connections against those caps (closing an idle one to make room when it
//! can), and the count of requests in flight per client behind a trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

use super::idle::{Activity, End};
use crate::config::Config;

/// Descriptors a derived total leaves to everything but connections and the database:
/// standard streams, the listener, the runtime's own, the reserve descriptor, the master
/// key, the orphan collector's directory walk.
const RESERVED_DESCRIPTORS: u64 = 64;
/// A SQLite connection holds the database file, its WAL and its shared-memory file.
const DESCRIPTORS_PER_DATABASE_CONNECTION: u64 = 3;
/// A connection's socket plus the blob it sends or the temporary file it uploads to.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// Assumed where the open-file limit cannot be read: the usual soft limit.
const ASSUMED_OPEN_FILE_LIMIT: u64 = 1024;
/// An unlimited or very large open-file limit is counted as this many.
const LARGEST_OPEN_FILE_LIMIT: u64 = 1 << 20;

/// The caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_address: usize,
}

impl Caps {
    /// The caps `config` sets; `server.max_connections = 0` takes what the open-file limit
    /// leaves room for (see [`room_for`]).
    pub fn new(config: &Config, open_file_limit: Option<u64>) -> Caps {
        let total = match config.server.max_connections {
            0 => room_for(config, open_file_limit),
            n => n as usize,
        };
        Caps {
            total,
            per_address: config.server.max_connections_per_ip as usize,
        }
    }
}

/// How many connections fit in `open_file_limit` (1024 when it is not known) beside the
/// database pool, the refused connections being answered and a few spare descriptors,
/// counting two descriptors per connection: its socket and one open file.
pub fn room_for(config: &Config, open_file_limit: Option<u64>) -> usize {
    let limit = open_file_limit
        .unwrap_or(ASSUMED_OPEN_FILE_LIMIT)
        .min(LARGEST_OPEN_FILE_LIMIT);
    // The read pool and the one writer.
    let database = DESCRIPTORS_PER_DATABASE_CONNECTION
        * (u64::from(config.database.max_connections.max(1)) + 1);
    let refusals = u64::from(config.server.max_lingering_refusals);
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS + database + refusals)
        / DESCRIPTORS_PER_CONNECTION;
    room.max(1) as usize
}

/// The soft open-file limit (`RLIMIT_NOFILE`) of this process, `u64::MAX` when unlimited,
/// `None` where it cannot be read.
pub fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Some(limit.current.unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The address connections are counted under: IPv4 addresses (IPv4-mapped IPv6 ones
/// included) as they are, IPv6 addresses by their /64, since a single host usually has a
/// whole /64 to pick addresses from.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Which cap a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerAddress,
}

/// Connections looked at, at most, to find the one idle longest when the table is full:
/// all of them up to this many, else this many picked at random, so that admitting a
/// connection costs the same whatever the cap.
const SAMPLE: usize = 1024;

/// Open connections, counted in total and per client address, each with what it is
/// doing, so that a full table can close an idle one to make room.
pub struct Table {
    caps: Caps,
    inner: Mutex<Inner>,
    open: watch::Sender<usize>,
}

#[derive(Default)]
struct Inner {
    /// Indexed by `Slot::index`; `None` for a free place (listed in `free`).
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    live: usize,
    next_id: u64,
    /// Indexes of the connections counted under each client address.
    per_address: HashMap<IpAddr, Vec<usize>>,
    /// State of the generator that samples entries (xorshift).
    random: u64,
}

struct Entry {
    /// Tells this entry from a later one in the same place.
    id: u64,
    /// The address it counts under; `None` for a trusted proxy's connection.
    key: Option<IpAddr>,
    activity: Arc<Activity>,
}

/// A place in the table, given back when dropped.
pub struct Slot {
    table: Arc<Table>,
    index: usize,
    id: u64,
}

/// A connection let in, and the cap for which an idle connection was closed to make room,
/// if one was.
pub struct Admitted {
    pub slot: Slot,
    pub evicted: Option<Refusal>,
}

impl Table {
    pub fn new(caps: Caps) -> Arc<Table> {
        Arc::new(Table {
            caps,
            inner: Mutex::new(Inner {
                random: 0x9e37_79b9_7f4a_7c15,
                ..Inner::default()
            }),
            open: watch::Sender::new(0),
        })
    }

    /// Takes a place for a new connection from `client`, doing `activity`, counted under
    /// its address unless `per_address` is false (a trusted proxy's). Over the cap of its
    /// address, that address's answered connection idle longest is closed to make room;
    /// over the total cap, the connection idle longest; with no such connection, the new
    /// one is refused.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        per_address: bool,
        activity: &Arc<Activity>,
    ) -> Result<Admitted, Refusal> {
        let key = per_address.then(|| client_key(client));
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut evicted = None;
        if let Some(key) = key {
            let counted = inner.per_address.get(&key).map_or(&[][..], Vec::as_slice);
            if counted.len() >= self.caps.per_address {
                // Only answered connections: one that has not sent a whole request may
                // have one in its socket buffer that is not read yet, and closing it would
                // reset a client that keeps within the cap. An answered one is between
                // requests, where HTTP lets the server close it.
                let victim = inner.oldest_idle(counted.iter().copied(), true);
                let Some(victim) = victim else {
                    return Err(Refusal::PerAddress);
                };
                inner.evict(victim);
                evicted = Some(Refusal::PerAddress);
            }
        }
        if inner.live >= self.caps.total {
            let Some(victim) = inner.oldest_idle_anywhere() else {
                return Err(Refusal::Total);
            };
            inner.evict(victim);
            evicted = Some(Refusal::Total);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let entry = Entry {
            id,
            key,
            activity: activity.clone(),
        };
        let index = match inner.free.pop() {
            Some(index) => {
                inner.entries[index] = Some(entry);
                index
            }
            None => {
                inner.entries.push(Some(entry));
                inner.entries.len() - 1
            }
        };
        if let Some(key) = key {
            inner.per_address.entry(key).or_default().push(index);
        }
        inner.live += 1;
        self.open.send_replace(inner.live);
        Ok(Admitted {
            slot: Slot {
                table: self.clone(),
                index,
                id,
            },
            evicted,
        })
    }

    /// Ends every connection with an answer that waited a whole send timeout for its
    /// client; advances the epoch of the others. Called every half send timeout.
    pub fn end_stalled(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ended = 0;
        for entry in inner.entries.iter().flatten() {
            if entry.activity.check_stalled() {
                entry.activity.end(End::Stalled);
                ended += 1;
            }
        }
        ended
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Open connections (those closed to make room no longer count).
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        let mut open = self.open.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

impl Inner {
    /// Of the connections at `indexes`, the one with no request in flight for longest
    /// (only those that answered a request, with `answered_only`).
    fn oldest_idle(
        &self,
        indexes: impl Iterator<Item = usize>,
        answered_only: bool,
    ) -> Option<usize> {
        let mut oldest: Option<(usize, Instant)> = None;
        for index in indexes {
            let Some(entry) = &self.entries[index] else {
                continue;
            };
            let Some(idle) = entry.activity.idle() else {
                continue;
            };
            if answered_only && !idle.answered {
                continue;
            }
            if oldest.is_none_or(|(_, since)| idle.since < since) {
                oldest = Some((index, idle.since));
            }
        }
        oldest.map(|(index, _)| index)
    }

    /// The connection idle longest of all, or of `SAMPLE` picked at random.
    fn oldest_idle_anywhere(&mut self) -> Option<usize> {
        let places = self.entries.len();
        if places <= SAMPLE {
            return self.oldest_idle(0..places, false);
        }
        let picks: Vec<usize> = (0..SAMPLE).map(|_| self.next_random() % places).collect();
        self.oldest_idle(picks.into_iter(), false)
    }

    fn next_random(&mut self) -> usize {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x as usize
    }

    /// Takes the entry at `index` out of the table and tells its connection to end.
    fn evict(&mut self, index: usize) {
        if let Some(entry) = self.remove(index) {
            entry.activity.end(End::Evicted);
        }
    }

    fn remove(&mut self, index: usize) -> Option<Entry> {
        let entry = self.entries[index].take()?;
        self.free.push(index);
        self.live -= 1;
        if let Some(key) = entry.key {
            if let Some(indexes) = self.per_address.get_mut(&key) {
                indexes.retain(|&i| i != index);
                if indexes.is_empty() {
                    self.per_address.remove(&key);
                }
            }
        }
        Some(entry)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self
            .table
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Already gone when it was closed to make room.
        if inner.entries[self.index]
            .as_ref()
            .is_some_and(|entry| entry.id == self.id)
        {
            inner.remove(self.index);
            self.table.open.send_replace(inner.live);
        }
    }
}

/// Requests in flight per client address, for connections from a trusted proxy (which
/// carry the requests of many clients, so that their connections cannot be counted per
/// client). Sharded so that requests of different clients rarely wait on one lock.
pub struct ClientRequests {
    cap: usize,
    shards: Box<[Mutex<HashMap<IpAddr, usize>>]>,
}

const CLIENT_SHARDS: usize = 16;

/// One request of a client in flight, given back when dropped.
pub struct ClientRequest {
    requests: Arc<ClientRequests>,
    key: IpAddr,
}

impl ClientRequests {
    pub fn new(cap: usize) -> Arc<ClientRequests> {
        Arc::new(ClientRequests {
            cap,
            shards: (0..CLIENT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn shard(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.shards[hash as usize % self.shards.len()]
    }

    /// Counts a request of `client` in flight, unless it has as many as the cap.
    pub fn start(self: &Arc<Self>, client: IpAddr) -> Option<ClientRequest> {
        let key = client_key(client);
        let mut counts = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientRequest {
            requests: self.clone(),
            key,
        })
    }
}

impl Drop for ClientRequest {
    fn drop(&mut self) {
        let mut counts = self
            .requests
            .shard(&self.key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_address: usize) -> Caps {
        Caps { total, per_address }
    }

    #[test]
    fn the_total_cap_is_derived_from_the_open_file_limit() {
        let config = Config::default();
        // 1024 - 64 spare - 3 * (8 readers + 1 writer) - 16 refusals, two descriptors per
        // connection.
        assert_eq!(Caps::new(&config, Some(1024)).total, 458);
        assert_eq!(Caps::new(&config, Some(256)).total, 74);
        assert_eq!(Caps::new(&config, None).total, 458);
        assert_eq!(Caps::new(&config, Some(10)).total, 1);
        assert_eq!(Caps::new(&config, Some(u64::MAX)).total, 524_234);
        let mut config = Config::default();
        config.server.max_connections = 5000;
        config.server.max_connections_per_ip = 7;
        assert_eq!(Caps::new(&config, Some(256)), caps(5000, 7));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    fn address(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    /// Spins until the clock moves on, so that what happens next is strictly later.
    fn later() {
        let now = Instant::now();
        while Instant::now() == now {}
    }

    /// An activity that has answered a request and is idle since now.
    fn answered() -> Arc<Activity> {
        later();
        let activity = Activity::new();
        drop(activity.start());
        activity
    }

    fn ended(activity: &Activity) -> bool {
        activity.idle().is_none() && activity.in_flight() == 0
    }

    #[test]
    fn busy_connections_are_refused_over_either_cap_and_places_given_back_on_drop() {
        let table = Table::new(caps(3, 2));
        let (a, b) = (address(1), address(2));
        let activity = Activity::new();
        let _busy = activity.start();
        let first = table.admit(a, true, &activity).unwrap();
        let _second = table.admit(a, true, &activity).unwrap();
        assert_eq!(
            table.admit(a, true, &activity).err(),
            Some(Refusal::PerAddress)
        );
        let _third = table.admit(b, true, &activity).unwrap();
        assert_eq!(table.admit(b, true, &activity).err(), Some(Refusal::Total));
        assert_eq!(table.open(), 3);
        drop(first.slot);
        assert_eq!(table.open(), 2);
        let again = table.admit(a, true, &activity).unwrap();
        assert_eq!(again.evicted, None);
        assert_eq!(
            table.admit(address(3), true, &activity).err(),
            Some(Refusal::Total)
        );
    }

    #[test]
    fn a_full_table_closes_the_connection_idle_longest() {
        let table = Table::new(caps(3, 3));
        let oldest = answered();
        let silent = {
            later();
            Activity::new()
        };
        let busy = Activity::new();
        let _request = busy.start();
        let _slots: Vec<Admitted> = [(1, &oldest), (2, &silent), (3, &busy)]
            .into_iter()
            .map(|(n, activity)| table.admit(address(n), true, activity).unwrap())
            .collect();
        let new = Activity::new();
        let admitted = table.admit(address(4), true, &new).unwrap();
        assert_eq!(admitted.evicted, Some(Refusal::Total));
        assert!(ended(&oldest), "the connection idle longest is told to end");
        assert!(!ended(&silent) && !ended(&busy));
        assert_eq!(table.open(), 3);
        // The next one makes room the same way; then only busy connections are left.
        let _next = table.admit(address(5), true, &busy).unwrap();
        assert!(ended(&silent));
        let _newest = table.admit(address(6), true, &busy).unwrap();
        assert!(ended(&new));
        assert_eq!(
            table.admit(address(7), true, &busy).err(),
            Some(Refusal::Total)
        );
        // The slot of a connection closed to make room gives back nothing when dropped.
        drop(admitted.slot);
        assert_eq!(table.open(), 3);
    }

    #[test]
    fn over_its_cap_an_address_closes_its_answered_connection_idle_longest() {
        let table = Table::new(caps(100, 3));
        let a = address(1);
        let older = answered();
        let newer = answered();
        let silent = Activity::new();
        let _slots: Vec<Admitted> = [&older, &newer, &silent]
            .into_iter()
            .map(|activity| table.admit(a, true, activity).unwrap())
            .collect();
        let other = table.admit(address(2), true, &silent).unwrap();
        assert_eq!(other.evicted, None);
        let fourth = table.admit(a, true, &Activity::new()).unwrap();
        assert_eq!(fourth.evicted, Some(Refusal::PerAddress));
        assert!(ended(&older) && !ended(&newer));
        let _fifth = table.admit(a, true, &Activity::new()).unwrap();
        assert!(ended(&newer));
        // Left: one that never answered and two new ones, none answered yet.
        assert!(!ended(&silent));
        assert_eq!(
            table.admit(a, true, &Activity::new()).err(),
            Some(Refusal::PerAddress)
        );
    }

    #[test]
    fn connections_of_a_trusted_proxy_are_not_counted_per_address() {
        let table = Table::new(caps(100, 2));
        let busy = Activity::new();
        let _request = busy.start();
        let proxy = address(1);
        let slots: Vec<Admitted> = (0..10)
            .map(|_| table.admit(proxy, false, &busy).unwrap())
            .collect();
        assert_eq!(table.open(), 10);
        let _direct = table.admit(proxy, true, &busy).unwrap();
        drop(slots);
        assert_eq!(table.open(), 1);
    }

    #[test]
    fn requests_of_a_client_behind_a_proxy_are_capped_per_client() {
        let requests = ClientRequests::new(2);
        let first = requests.start(address(1)).unwrap();
        let _second = requests.start(address(1)).unwrap();
        assert!(requests.start(address(1)).is_none());
        let _other = requests.start(address(2)).unwrap();
        drop(first);
        assert!(requests.start(address(1)).is_some());
    }
}

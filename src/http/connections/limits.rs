//! How many connections may be open, in total and per client address, and the table that
//! admits new connections against those caps.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

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
/// database pool and a few spare descriptors, counting two descriptors per connection: its
/// socket and one open file.
pub fn room_for(config: &Config, open_file_limit: Option<u64>) -> usize {
    let limit = open_file_limit
        .unwrap_or(ASSUMED_OPEN_FILE_LIMIT)
        .min(LARGEST_OPEN_FILE_LIMIT);
    // The read pool and the one writer.
    let database = DESCRIPTORS_PER_DATABASE_CONNECTION
        * (u64::from(config.database.max_connections.max(1)) + 1);
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS + database) / DESCRIPTORS_PER_CONNECTION;
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

/// Open connections, counted in total and per client address.
pub struct Table {
    caps: Caps,
    counts: Mutex<Counts>,
    open: watch::Sender<usize>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// A place in the table, given back when dropped.
pub struct Slot {
    table: Arc<Table>,
    key: IpAddr,
}

impl Table {
    pub fn new(caps: Caps) -> Arc<Table> {
        Arc::new(Table {
            caps,
            counts: Mutex::new(Counts::default()),
            open: watch::Sender::new(0),
        })
    }

    /// Takes a place for a new connection from `client`, unless that is over a cap.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refusal> {
        let key = client_key(client);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.caps.total {
            return Err(Refusal::Total);
        }
        let from_client = counts.per_address.get(&key).copied().unwrap_or(0);
        if from_client >= self.caps.per_address {
            return Err(Refusal::PerAddress);
        }
        counts.per_address.insert(key, from_client + 1);
        counts.total += 1;
        self.open.send_replace(counts.total);
        Ok(Slot {
            table: self.clone(),
            key,
        })
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Open connections.
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

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .table
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&self.key);
            }
        }
        counts.total -= 1;
        self.table.open.send_replace(counts.total);
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
        // 1024 - 64 spare - 3 * (8 readers + 1 writer), two descriptors per connection.
        assert_eq!(Caps::new(&config, Some(1024)).total, 466);
        assert_eq!(Caps::new(&config, Some(256)).total, 82);
        assert_eq!(Caps::new(&config, None).total, 466);
        assert_eq!(Caps::new(&config, Some(10)).total, 1);
        assert_eq!(Caps::new(&config, Some(u64::MAX)).total, 524_242);
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

    #[test]
    fn places_are_refused_over_either_cap_and_given_back_on_drop() {
        let table = Table::new(caps(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.admit(a).unwrap();
        let _second = table.admit(a).unwrap();
        assert_eq!(table.admit(a).err(), Some(Refusal::PerAddress));
        let _third = table.admit(b).unwrap();
        assert_eq!(table.admit(b).err(), Some(Refusal::Total));
        assert_eq!(table.open(), 3);
        drop(first);
        assert_eq!(table.open(), 2);
        let _again = table.admit(a).unwrap();
        assert_eq!(table.admit(a).err(), Some(Refusal::Total));
    }
}

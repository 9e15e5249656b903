//! Resource alarms: conditions under which the broker stops reading publishers' frames, as
//! RabbitMQ's memory and disk alarms block publishing connections.
//!
//! A blocked connection is told so (`Blocked`), and its reader waits before acting on the
//! publish that met the alarm; TCP then pushes back on the publisher. Nothing is dropped or
//! refused to make room, and connections that only consume, acknowledge or administer keep
//! working. Two alarms: the disk alarm (free space on the data directory's filesystem below
//! `--disk-free-limit`) blocks persistent publishes, since transient ones never touch the
//! disk; the memory alarm (the daemon holding more than `--memory-limit`) blocks every
//! publish.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Which alarms are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmState {
    /// Free disk space is below the limit.
    pub disk: bool,
    /// Memory in use is above the budget.
    pub memory: bool,
}

impl AlarmState {
    /// Why a publish (persistent or not) must wait, if it must.
    pub fn blocks(&self, persistent: bool) -> Option<&'static str> {
        if self.memory {
            Some("memory alarm: the server holds more than its --memory-limit")
        } else if self.disk && persistent {
            Some(
                "disk alarm: free space on the data directory's filesystem is below --disk-free-limit",
            )
        } else {
            None
        }
    }

    /// The names of the alarms that are on, for `status`.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.disk {
            out.push("disk".to_owned());
        }
        if self.memory {
            out.push("memory".to_owned());
        }
        out
    }
}

/// The broker's alarms: set by monitors, read by every connection before each publish.
#[derive(Debug)]
pub struct Alarms {
    /// Whether any alarm is on: the one check a publish pays while none is.
    any: AtomicBool,
    state: watch::Sender<AlarmState>,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            any: AtomicBool::new(false),
            state: watch::Sender::new(AlarmState::default()),
        }
    }
}

impl Alarms {
    /// Why a publish must wait now, if it must.
    pub fn blocks(&self, persistent: bool) -> Option<&'static str> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        self.state.borrow().blocks(persistent)
    }

    /// The alarms that are on.
    pub fn current(&self) -> AlarmState {
        *self.state.borrow()
    }

    /// Follows changes, for a blocked connection waiting for its alarm to clear.
    pub fn subscribe(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }

    /// Turns the disk alarm on or off; returns whether that changed it.
    pub fn set_disk(&self, on: bool) -> bool {
        self.set(|s| &mut s.disk, on)
    }

    /// Turns the memory alarm on or off; returns whether that changed it.
    pub fn set_memory(&self, on: bool) -> bool {
        self.set(|s| &mut s.memory, on)
    }

    fn set(&self, alarm: impl Fn(&mut AlarmState) -> &mut bool, on: bool) -> bool {
        let changed = self.state.send_if_modified(|s| {
            let flag = alarm(s);
            let changed = *flag != on;
            *flag = on;
            changed
        });
        self.any.store(
            *self.state.borrow() != AlarmState::default(),
            Ordering::Relaxed,
        );
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_alarm_blocks_persistent_publishes_only() {
        let alarms = Alarms::default();
        assert_eq!(alarms.blocks(true), None);
        assert!(alarms.set_disk(true));
        assert!(!alarms.set_disk(true), "already on");
        assert!(alarms.blocks(true).is_some());
        assert_eq!(alarms.blocks(false), None);
        assert_eq!(alarms.current().names(), ["disk"]);
        assert!(alarms.set_disk(false));
        assert_eq!(alarms.blocks(true), None);
    }

    #[test]
    fn the_memory_alarm_blocks_every_publish() {
        let alarms = Alarms::default();
        assert!(alarms.set_memory(true));
        assert!(alarms.blocks(false).is_some_and(|r| r.contains("memory")));
        assert!(alarms.blocks(true).is_some_and(|r| r.contains("memory")));
        alarms.set_disk(true);
        assert_eq!(alarms.current().names(), ["disk", "memory"]);
        alarms.set_memory(false);
        assert_eq!(
            alarms.blocks(false),
            None,
            "the disk alarm lets transient ones by"
        );
        alarms.set_disk(false);
        assert_eq!(alarms.blocks(true), None);
    }
}

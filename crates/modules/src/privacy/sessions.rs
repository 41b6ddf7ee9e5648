//! The per-user table of a user's connected sessions, kept by the privacy module while the
//! user is online: a short vector searched in order rather than a hash map. A user has one
//! session, rarely a handful, and a `HashMap` allocates four buckets at its first insert
//! (about 0.25 KB of every idle session, issue 7) where the vector holds exactly one entry.

use starling_proto::jid::Jid;

/// Full JID -> `V`, in insertion order.
#[derive(Debug)]
pub(super) struct Sessions<V> {
    entries: Vec<(Jid, V)>,
}

impl<V> Default for Sessions<V> {
    fn default() -> Self {
        Sessions {
            entries: Vec::new(),
        }
    }
}

impl<V> Sessions<V> {
    pub(super) fn get(&self, jid: &Jid) -> Option<&V> {
        self.entries.iter().find(|(j, _)| j == jid).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, jid: &Jid) -> Option<&mut V> {
        self.entries
            .iter_mut()
            .find(|(j, _)| j == jid)
            .map(|(_, v)| v)
    }

    /// The entry for `jid`, added with `V::default()` if there is none.
    pub(super) fn get_or_default(&mut self, jid: &Jid) -> &mut V
    where
        V: Default,
    {
        let at = match self.entries.iter().position(|(j, _)| j == jid) {
            Some(at) => at,
            None => {
                // Exactly one slot for a first session: no growth by doubling from four.
                self.entries.reserve_exact(1);
                self.entries.push((jid.clone(), V::default()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[at].1
    }

    pub(super) fn remove(&mut self, jid: &Jid) -> Option<V> {
        let at = self.entries.iter().position(|(j, _)| j == jid)?;
        Some(self.entries.swap_remove(at).1)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Jid, &V)> {
        self.entries.iter().map(|(j, v)| (j, v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn entries_are_found_changed_and_removed_by_full_jid() {
        let mut s: Sessions<u32> = Sessions::default();
        assert!(s.is_empty());
        *s.get_or_default(&jid("a@x/1")) += 1;
        *s.get_or_default(&jid("a@x/2")) += 5;
        *s.get_or_default(&jid("a@x/1")) += 1;
        assert_eq!(s.get(&jid("a@x/1")), Some(&2));
        assert_eq!(s.get(&jid("a@x/2")), Some(&5));
        assert_eq!(s.get(&jid("a@x/3")), None);
        *s.get_mut(&jid("a@x/2")).unwrap() = 7;
        assert_eq!(s.values().sum::<u32>(), 9);
        for v in s.values_mut() {
            *v *= 10;
        }
        let mut seen: Vec<(String, u32)> =
            s.iter().map(|(j, v)| (j.as_str().to_owned(), *v)).collect();
        seen.sort();
        assert_eq!(seen, [("a@x/1".to_owned(), 20), ("a@x/2".to_owned(), 70)]);
        assert_eq!(s.remove(&jid("a@x/1")), Some(20));
        assert_eq!(s.remove(&jid("a@x/1")), None);
        assert_eq!(s.get(&jid("a@x/2")), Some(&70));
        assert_eq!(s.remove(&jid("a@x/2")), Some(70));
        assert!(s.is_empty());
    }

    #[test]
    fn one_session_allocates_one_slot() {
        let mut s: Sessions<u32> = Sessions::default();
        s.get_or_default(&jid("a@x/phone"));
        assert_eq!(s.allocated(), 1);
    }
}

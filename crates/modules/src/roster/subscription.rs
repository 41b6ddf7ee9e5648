//! The presence subscription state machine of RFC 6121 Appendix A, as pure functions.
//!
//! A contact's state, from the point of view of the user whose roster holds it, is one of the
//! nine states of Appendix A.1 plus the pre-approval flag of §3.4 (meaningful only in the
//! states where the contact has no subscription and no pending request from the contact:
//! "None", "None + Pending Out" and "To"). [`outbound`] applies a subscription stanza the user
//! sends (Appendix A.2: whether the server routes it, and the new state); [`inbound`] applies
//! one the user's server receives for the user (Appendix A.3: whether it is delivered, the new
//! state, and the server's auto-reply). Both also say when the user's presence must follow:
//! current presence to a contact that just got access (§3.1.5), `unavailable` to one that just
//! lost it (§3.2.2, §3.3.3).
//!
//! Nothing here touches storage or sockets; the roster module turns an [`Outcome`] into roster
//! pushes, routing and deliveries.

/// One of the subscription states of RFC 6121 Appendix A.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum State {
    /// Neither side is subscribed and nothing is pending.
    #[default]
    None,
    /// The user asked for the contact's presence; no answer yet.
    NonePendingOut,
    /// The contact asked for the user's presence; the user has not answered.
    NonePendingIn,
    /// Both asked, neither answered.
    NonePendingOutIn,
    /// The user receives the contact's presence.
    To,
    /// The user receives the contact's presence; the contact asked for the user's.
    ToPendingIn,
    /// The contact receives the user's presence.
    From,
    /// The contact receives the user's presence; the user asked for the contact's.
    FromPendingOut,
    /// Each receives the other's presence.
    Both,
}

impl State {
    /// Every state, in the order of the Appendix A tables.
    pub const ALL: [State; 9] = [
        State::None,
        State::NonePendingOut,
        State::NonePendingIn,
        State::NonePendingOutIn,
        State::To,
        State::ToPendingIn,
        State::From,
        State::FromPendingOut,
        State::Both,
    ];

    /// Builds a state from its four facets. A pending request in a direction that is already
    /// subscribed cannot exist; such a request is dropped.
    pub fn from_parts(to: bool, from: bool, pending_out: bool, pending_in: bool) -> State {
        let pending_out = pending_out && !to;
        let pending_in = pending_in && !from;
        match (to, from, pending_out, pending_in) {
            (false, false, false, false) => State::None,
            (false, false, true, false) => State::NonePendingOut,
            (false, false, false, true) => State::NonePendingIn,
            (false, false, true, true) => State::NonePendingOutIn,
            (true, false, _, false) => State::To,
            (true, false, _, true) => State::ToPendingIn,
            (false, true, false, _) => State::From,
            (false, true, true, _) => State::FromPendingOut,
            (true, true, _, _) => State::Both,
        }
    }

    /// The user is subscribed to the contact's presence.
    pub fn to(self) -> bool {
        matches!(self, State::To | State::ToPendingIn | State::Both)
    }

    /// The contact is subscribed to the user's presence.
    pub fn from(self) -> bool {
        matches!(self, State::From | State::FromPendingOut | State::Both)
    }

    /// The user's request for the contact's presence awaits an answer (`ask='subscribe'`).
    pub fn pending_out(self) -> bool {
        matches!(
            self,
            State::NonePendingOut | State::NonePendingOutIn | State::FromPendingOut
        )
    }

    /// The contact's request for the user's presence awaits the user's answer.
    pub fn pending_in(self) -> bool {
        matches!(
            self,
            State::NonePendingIn | State::NonePendingOutIn | State::ToPendingIn
        )
    }

    fn with(self, to: bool, from: bool, pending_out: bool, pending_in: bool) -> State {
        State::from_parts(to, from, pending_out, pending_in)
    }

    /// The `subscription` attribute of a roster item in this state (RFC 6121 §2.1.2.5).
    pub fn subscription_attr(self) -> &'static str {
        match (self.to(), self.from()) {
            (false, false) => "none",
            (true, false) => "to",
            (false, true) => "from",
            (true, true) => "both",
        }
    }

    /// A stable name for storage.
    pub fn name(self) -> &'static str {
        match self {
            State::None => "none",
            State::NonePendingOut => "none+out",
            State::NonePendingIn => "none+in",
            State::NonePendingOutIn => "none+out+in",
            State::To => "to",
            State::ToPendingIn => "to+in",
            State::From => "from",
            State::FromPendingOut => "from+out",
            State::Both => "both",
        }
    }

    /// The inverse of [`State::name`].
    pub fn from_name(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The four subscription presence types (RFC 6121 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request for the recipient's presence.
    Subscribe,
    /// Approval of the recipient's request (or a pre-approval, §3.4).
    Subscribed,
    /// The sender no longer wants the recipient's presence.
    Unsubscribe,
    /// Denial of the recipient's request, or cancellation of its subscription.
    Unsubscribed,
}

impl Kind {
    /// The presence `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subscribe => "subscribe",
            Kind::Subscribed => "subscribed",
            Kind::Unsubscribe => "unsubscribe",
            Kind::Unsubscribed => "unsubscribed",
        }
    }

    /// Parses a presence `type`; `None` for the other types.
    pub fn parse(t: Option<&str>) -> Option<Kind> {
        Some(match t? {
            "subscribe" => Kind::Subscribe,
            "subscribed" => Kind::Subscribed,
            "unsubscribe" => Kind::Unsubscribe,
            "unsubscribed" => Kind::Unsubscribed,
            _ => return None,
        })
    }
}

/// A contact's subscription: the Appendix A state plus the pre-approval flag (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sub {
    /// The Appendix A state.
    pub state: State,
    /// The user approved a subscription request from the contact before it arrived
    /// (`approved='true'` on the roster item).
    pub approved: bool,
}

impl Sub {
    /// A subscription without pre-approval.
    pub fn new(state: State) -> Sub {
        Sub {
            state,
            approved: false,
        }
    }
}

/// What processing one subscription stanza means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The subscription afterwards.
    pub next: Sub,
    /// Outbound: route the stanza to the contact. Inbound: deliver it to the user.
    pub forward: bool,
    /// Inbound only: the server answers the contact on the user's behalf with this type.
    pub auto_reply: Option<Kind>,
    /// Send the user's current presence (each available resource) to the contact, who just
    /// gained (or re-confirmed) access to it.
    pub send_presence: bool,
    /// Send `unavailable` from each of the user's available resources to the contact, who
    /// just lost access to the user's presence.
    pub send_unavailable: bool,
}

impl Outcome {
    fn keep(cur: Sub) -> Outcome {
        Outcome {
            next: cur,
            forward: false,
            auto_reply: None,
            send_presence: false,
            send_unavailable: false,
        }
    }

    fn to(next: Sub, forward: bool) -> Outcome {
        Outcome {
            next,
            forward,
            auto_reply: None,
            send_presence: false,
            send_unavailable: false,
        }
    }
}

/// The user sends a subscription stanza of `kind` to the contact (RFC 6121 Appendix A.2,
/// §3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4).
pub fn outbound(cur: Sub, kind: Kind) -> Outcome {
    let s = cur.state;
    let (to, from, out, inn) = (s.to(), s.from(), s.pending_out(), s.pending_in());
    match kind {
        // A.2.1: always routed, so that a user can resynchronise a lost subscription.
        Kind::Subscribe => Outcome::to(
            Sub {
                state: s.with(to, from, !to, inn),
                approved: cur.approved,
            },
            true,
        ),
        // A.2.2: always routed.
        Kind::Unsubscribe => Outcome::to(
            Sub {
                state: s.with(false, from, false, inn),
                approved: cur.approved,
            },
            true,
        ),
        Kind::Subscribed => {
            if inn {
                // A.2.3: approving the contact's pending request.
                let mut o = Outcome::to(Sub::new(s.with(to, true, out, false)), true);
                o.send_presence = true;
                o
            } else if !from {
                // §3.4.2: no request pending: a pre-approval, recorded but not routed.
                Outcome::to(
                    Sub {
                        state: s,
                        approved: true,
                    },
                    false,
                )
            } else {
                Outcome::keep(cur)
            }
        }
        Kind::Unsubscribed => {
            if cur.approved {
                // §3.4.1: cancelling a pre-approval: removed, not routed.
                Outcome::to(Sub::new(s), false)
            } else if inn {
                // A.2.4: denying the contact's pending request.
                Outcome::to(Sub::new(s.with(to, false, out, false)), true)
            } else if from {
                // A.2.4: cancelling the contact's subscription; the contact first receives
                // unavailable from each available resource (§3.2.2).
                let mut o = Outcome::to(Sub::new(s.with(to, false, out, false)), true);
                o.send_unavailable = true;
                o
            } else {
                Outcome::keep(cur)
            }
        }
    }
}

/// The user's server receives a subscription stanza of `kind` from the contact for the user
/// (RFC 6121 Appendix A.3, §3.1.3, §3.1.6, §3.2.3, §3.3.3, §3.4.2).
pub fn inbound(cur: Sub, kind: Kind) -> Outcome {
    let s = cur.state;
    let (to, from, out, inn) = (s.to(), s.from(), s.pending_out(), s.pending_in());
    match kind {
        Kind::Subscribe => {
            if from {
                // A.3.1 note [2]: already subscribed: auto-reply `subscribed`; like Prosody,
                // also send current presence, since the contact evidently lost it.
                let mut o = Outcome::keep(cur);
                o.auto_reply = Some(Kind::Subscribed);
                o.send_presence = true;
                o
            } else if inn {
                // A.3.1: a request is already pending: not delivered again.
                Outcome::keep(cur)
            } else if cur.approved {
                // §3.4.2: pre-approved: the server approves on the user's behalf and the user
                // never sees the request.
                let mut o = Outcome::keep(Sub::new(s.with(to, true, out, false)));
                o.auto_reply = Some(Kind::Subscribed);
                o.send_presence = true;
                o
            } else {
                Outcome::to(
                    Sub {
                        state: s.with(to, false, out, true),
                        approved: false,
                    },
                    true,
                )
            }
        }
        Kind::Unsubscribe => {
            if inn || from {
                // A.3.2: delivered, with an `unsubscribed` auto-reply (note [1]); a contact
                // that was subscribed gets unavailable from each available resource (§3.3.3).
                let mut o = Outcome::to(
                    Sub {
                        state: s.with(to, false, out, false),
                        approved: cur.approved,
                    },
                    true,
                );
                o.auto_reply = Some(Kind::Unsubscribed);
                o.send_unavailable = from;
                o
            } else {
                Outcome::keep(cur)
            }
        }
        Kind::Subscribed => {
            if out {
                // A.3.3: only an answer to a pending request counts.
                Outcome::to(
                    Sub {
                        state: s.with(true, from, false, inn),
                        approved: cur.approved,
                    },
                    true,
                )
            } else {
                Outcome::keep(cur)
            }
        }
        Kind::Unsubscribed => {
            if to || out {
                // A.3.4
                Outcome::to(
                    Sub {
                        state: s.with(false, from, false, inn),
                        approved: cur.approved,
                    },
                    true,
                )
            } else {
                Outcome::keep(cur)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    /// One row of an Appendix A table: existing state -> (forwarded?, new state).
    type Row = (State, bool, State);

    fn check(table: &[Row], kind: Kind, f: fn(Sub, Kind) -> Outcome, what: &str) {
        assert_eq!(table.len(), 9, "every state has a row");
        for &(state, forward, next) in table {
            let o = f(Sub::new(state), kind);
            assert_eq!(
                (o.forward, o.next.state),
                (forward, next),
                "{what} {kind:?} in {state:?}"
            );
        }
    }

    // RFC 6121 A.2.1 - A.2.4: outbound stanzas ("route?" column).

    #[test]
    fn outbound_subscribe_a_2_1() {
        let table = [
            (None, true, NonePendingOut),
            (NonePendingOut, true, NonePendingOut),
            (NonePendingIn, true, NonePendingOutIn),
            (NonePendingOutIn, true, NonePendingOutIn),
            (To, true, To),
            (ToPendingIn, true, ToPendingIn),
            (From, true, FromPendingOut),
            (FromPendingOut, true, FromPendingOut),
            (Both, true, Both),
        ];
        check(&table, Kind::Subscribe, outbound, "outbound");
    }

    #[test]
    fn outbound_unsubscribe_a_2_2() {
        let table = [
            (None, true, None),
            (NonePendingOut, true, None),
            (NonePendingIn, true, NonePendingIn),
            (NonePendingOutIn, true, NonePendingIn),
            (To, true, None),
            (ToPendingIn, true, NonePendingIn),
            (From, true, From),
            (FromPendingOut, true, From),
            (Both, true, From),
        ];
        check(&table, Kind::Unsubscribe, outbound, "outbound");
    }

    #[test]
    fn outbound_subscribed_a_2_3() {
        // Without pre-approval support the "no" rows change nothing; with it (§3.4) the rows
        // None / None+Pending Out / To record a pre-approval instead (tested below).
        let table = [
            (None, false, None),
            (NonePendingOut, false, NonePendingOut),
            (NonePendingIn, true, From),
            (NonePendingOutIn, true, FromPendingOut),
            (To, false, To),
            (ToPendingIn, true, Both),
            (From, false, From),
            (FromPendingOut, false, FromPendingOut),
            (Both, false, Both),
        ];
        check(&table, Kind::Subscribed, outbound, "outbound");
        for (state, _, _) in table {
            let o = outbound(Sub::new(state), Kind::Subscribed);
            assert_eq!(o.send_presence, state.pending_in(), "{state:?}");
            assert_eq!(
                o.next.approved,
                matches!(state, None | NonePendingOut | To),
                "pre-approval recorded in {state:?}"
            );
        }
    }

    #[test]
    fn outbound_unsubscribed_a_2_4() {
        let table = [
            (None, false, None),
            (NonePendingOut, false, NonePendingOut),
            (NonePendingIn, true, None),
            (NonePendingOutIn, true, NonePendingOut),
            (To, false, To),
            (ToPendingIn, true, To),
            (From, true, None),
            (FromPendingOut, true, NonePendingOut),
            (Both, true, To),
        ];
        check(&table, Kind::Unsubscribed, outbound, "outbound");
        for (state, _, _) in table {
            let o = outbound(Sub::new(state), Kind::Unsubscribed);
            assert_eq!(o.send_unavailable, state.from(), "{state:?}");
        }
    }

    // RFC 6121 A.3.1 - A.3.4: inbound stanzas ("deliver?" column).

    #[test]
    fn inbound_subscribe_a_3_1() {
        let table = [
            (None, true, NonePendingIn),
            (NonePendingOut, true, NonePendingOutIn),
            (NonePendingIn, false, NonePendingIn),
            (NonePendingOutIn, false, NonePendingOutIn),
            (To, true, ToPendingIn),
            (ToPendingIn, false, ToPendingIn),
            (From, false, From),
            (FromPendingOut, false, FromPendingOut),
            (Both, false, Both),
        ];
        check(&table, Kind::Subscribe, inbound, "inbound");
        for (state, _, _) in table {
            let o = inbound(Sub::new(state), Kind::Subscribe);
            let reply = state.from().then_some(Kind::Subscribed);
            assert_eq!(o.auto_reply, reply, "{state:?}");
        }
    }

    #[test]
    fn inbound_unsubscribe_a_3_2() {
        let table = [
            (None, false, None),
            (NonePendingOut, false, NonePendingOut),
            (NonePendingIn, true, None),
            (NonePendingOutIn, true, NonePendingOut),
            (To, false, To),
            (ToPendingIn, true, To),
            (From, true, None),
            (FromPendingOut, true, NonePendingOut),
            (Both, true, To),
        ];
        check(&table, Kind::Unsubscribe, inbound, "inbound");
        for (state, forward, _) in table {
            let o = inbound(Sub::new(state), Kind::Unsubscribe);
            assert_eq!(
                o.auto_reply,
                forward.then_some(Kind::Unsubscribed),
                "{state:?}"
            );
            assert_eq!(o.send_unavailable, state.from(), "{state:?}");
        }
    }

    #[test]
    fn inbound_subscribed_a_3_3() {
        let table = [
            (None, false, None),
            (NonePendingOut, true, To),
            (NonePendingIn, false, NonePendingIn),
            (NonePendingOutIn, true, ToPendingIn),
            (To, false, To),
            (ToPendingIn, false, ToPendingIn),
            (From, false, From),
            (FromPendingOut, true, Both),
            (Both, false, Both),
        ];
        check(&table, Kind::Subscribed, inbound, "inbound");
    }

    #[test]
    fn inbound_unsubscribed_a_3_4() {
        let table = [
            (None, false, None),
            (NonePendingOut, true, None),
            (NonePendingIn, false, NonePendingIn),
            (NonePendingOutIn, true, NonePendingIn),
            (To, true, None),
            (ToPendingIn, true, NonePendingIn),
            (From, false, From),
            (FromPendingOut, true, From),
            (Both, true, From),
        ];
        check(&table, Kind::Unsubscribed, inbound, "inbound");
    }

    #[test]
    fn pre_approval_section_3_4() {
        // The user pre-approves in each state where that is possible...
        for (state, approved_next) in [(None, From), (NonePendingOut, FromPendingOut), (To, Both)] {
            let pre = outbound(Sub::new(state), Kind::Subscribed);
            assert!(!pre.forward, "a pre-approval is not routed ({state:?})");
            assert_eq!(
                pre.next,
                Sub {
                    state,
                    approved: true
                }
            );
            // ...and the contact's request is then approved by the server, not delivered.
            let o = inbound(pre.next, Kind::Subscribe);
            assert_eq!(o.next, Sub::new(approved_next), "{state:?}");
            assert!(!o.forward);
            assert_eq!(o.auto_reply, Some(Kind::Subscribed));
            assert!(o.send_presence);
            // Cancelling the pre-approval instead removes it without routing.
            let c = outbound(pre.next, Kind::Unsubscribed);
            assert_eq!(c.next, Sub::new(state));
            assert!(!c.forward);
            // A repeated pre-approval changes nothing.
            assert_eq!(outbound(pre.next, Kind::Subscribed).next, pre.next);
        }
    }

    #[test]
    fn facets_round_trip() {
        for s in State::ALL {
            assert_eq!(
                State::from_parts(s.to(), s.from(), s.pending_out(), s.pending_in()),
                s
            );
            assert_eq!(State::from_name(s.name()), Some(s));
        }
        assert_eq!(Both.subscription_attr(), "both");
        assert_eq!(FromPendingOut.subscription_attr(), "from");
        assert_eq!(ToPendingIn.subscription_attr(), "to");
        assert_eq!(NonePendingOutIn.subscription_attr(), "none");
    }
}

//! A message accepted for an account and then not delivered bounces to its sender as the
//! sender wrote it (RFC 6120 §8.3.1: the error carries the original stanza), even when a
//! module at [`Hook::Accepted`] edited the recipient's copy (as MAM adds its archive id). The
//! server keeps that copy only when a module says it edits ([`Module::edits_at`]).

use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use starling_core::config::ResourceConflict;
use starling_core::session::{Outbound, SessionHandle, SessionInbox};
use starling_core::{Config, Hook, HookContext, Module, Outcome, Server};
use starling_proto::jid::Jid;

const NS_TEST: &str = "urn:test:accept";

/// Adds a `<stamp/>` to every accepted message but errors, as MAM adds a `<stanza-id/>`.
struct Stamp;

#[async_trait]
impl Module for Stamp {
    fn name(&self) -> &'static str {
        "stamp"
    }
    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Accepted]
    }
    async fn edit_stanza(
        &self,
        _server: &Server,
        stanza: &mut Element,
        _hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        // Not errors, as MAM does not archive them: the bounce itself is accepted for alice.
        if stanza.attr("type") != Some("error") {
            stanza.append_child(Element::bare("stamp", NS_TEST));
        }
        Outcome::Pass
    }
}

/// Looks at accepted messages and says it never edits them.
struct Look;

#[async_trait]
impl Module for Look {
    fn name(&self) -> &'static str {
        "look"
    }
    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Accepted]
    }
    fn edits_at(&self, _hook: Hook) -> bool {
        false
    }
}

fn bind(server: &Server, jid: &str) -> (Jid, SessionInbox) {
    let jid = Jid::parse(jid).unwrap();
    let (handle, inbox) = SessionHandle::new(16);
    server
        .router()
        .bind(&jid, handle, ResourceConflict::KickOld, 10)
        .expect("bound");
    server.router().set_presence(&jid, true, 0);
    (jid, inbox)
}

/// Routes a chat message from alice to bob, whose session is gone (its queue closed), and
/// returns what bob's queue never took and alice got back.
async fn bounce_with(modules: Vec<Arc<dyn Module>>) -> Element {
    let storage = starling_storage::open("sqlite::memory:").await.unwrap();
    let server = Server::new(Arc::new(Config::default()), storage, modules).unwrap();
    let (_alice, mut alice_inbox) = bind(&server, "alice@localhost/r");
    let (_bob, bob_inbox) = bind(&server, "bob@localhost/r");
    drop(bob_inbox);
    let msg: Element = "<message xmlns='jabber:client' type='chat' from='alice@localhost/r' \
        to='bob@localhost/r' id='m1'><body>hi</body></message>"
        .parse()
        .unwrap();
    server.route(msg).await;
    match alice_inbox.rx.try_recv() {
        Ok(out @ Outbound::Stanza(_)) => out.into_element(),
        other => panic!("no bounce: {other:?}"),
    }
}

#[tokio::test]
async fn a_bounce_carries_the_message_as_sent_not_as_edited() {
    let bounce = bounce_with(vec![Arc::new(Stamp)]).await;
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(bounce.attr("id"), Some("m1"));
    assert!(bounce.get_child("body", "jabber:client").is_some());
    assert!(
        bounce.get_child("stamp", NS_TEST).is_none(),
        "the recipient's edit went back to the sender: {bounce:?}"
    );
}

#[tokio::test]
async fn without_an_editing_module_the_bounce_is_the_message() {
    let bounce = bounce_with(vec![Arc::new(Look)]).await;
    assert_eq!(bounce.attr("type"), Some("error"));
    assert_eq!(bounce.attr("id"), Some("m1"));
    assert!(bounce.get_child("body", "jabber:client").is_some());
    // A module that says it does not edit, but does, would leak its edit: `Look` does not.
    let both = bounce_with(vec![Arc::new(Look), Arc::new(Stamp)]).await;
    assert!(both.get_child("stamp", NS_TEST).is_none());
}

//! Server features, one module per file (DESIGN "Modules"). [`default_modules`] is the list
//! the server enables; adding a XEP means adding a file here and one line in that list.

use std::sync::Arc;

use starling_core::{Config, Module};

pub mod caps;
pub mod carbons;
pub mod csi;
pub mod disco;
pub mod extdisco;
pub mod last;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod privacy;
pub mod private;
pub mod push;
pub mod register;
pub mod roster;
pub mod stanza_id;
pub mod time;
pub mod vcard;
pub mod version;

/// Modules an operator may switch off with `[modules] disable`; the others carry the core
/// protocol (RFC 6120/6121) or other modules rely on them.
pub const OPTIONAL: &[&str] = &[
    "carbons",
    "csi",
    "extdisco",
    "last",
    "mam",
    "offline",
    "pep",
    "private",
    "register",
    "stanza-id",
    "time",
    "vcard",
    "version",
];

/// Checks `[modules] disable`: only names of [`OPTIONAL`] modules.
pub fn check_disabled(config: &Config) -> Result<(), String> {
    for name in &config.modules.disable {
        if !OPTIONAL.contains(&name.as_str()) {
            return Err(format!(
                "[modules] disable: {name:?} is not an optional module (optional: {})",
                OPTIONAL.join(", ")
            ));
        }
    }
    Ok(())
}

/// The modules enabled by default, in hook order, with the limits of `config.limits`,
/// minus those switched off in `[modules] disable`.
pub fn default_modules(config: &Config) -> Vec<Arc<dyn Module>> {
    let limits = &config.limits;
    let (roster, presence) = roster::roster_and_presence(roster::store::RosterLimits {
        max_items: limits.roster_max_items,
        ..Default::default()
    });
    let mut modules: Vec<Arc<dyn Module>> = vec![
        // Privacy lists supersede every other delivery rule (XEP-0016 §2.2 rule 4): first.
        Arc::new(privacy::Privacy::default()),
        Arc::new(disco::Disco),
        Arc::new(ping::Ping),
        Arc::new(version::Version),
        roster,
        presence,
        // After privacy (denied stanzas are neither archived nor copied); the archive before
        // carbons (so `<sent/>` copies carry the archive id); both before offline storage (so
        // stored messages carry it too).
        Arc::new(mam::Mam::new(&config.mam)),
        Arc::new(carbons::Carbons::new()),
        Arc::new(offline::Offline::new(limits.offline_quota)),
        Arc::new(push::Push::new(&config.push)),
        Arc::new(time::EntityTime),
        Arc::new(vcard::VCard::new(limits.vcard_max_bytes)),
        Arc::new(private::PrivateStorage::default()),
        Arc::new(last::LastActivity::default()),
        Arc::new(register::Register),
        // After presence: sees the presence broadcast it learns entity capabilities from.
        Arc::new(pep::Pep::default()),
        Arc::new(extdisco::ExternalServices),
        // After the archive and carbons: removes the sender's archive id before a message
        // leaves (XEP-0313 §3.5).
        Arc::new(stanza_id::StanzaIds),
        // After every other delivery filter: what it holds back was already allowed.
        Arc::new(csi::Csi::default()),
    ];
    if config.muc.enabled {
        // Serves its own domain (conference.<host>); no hooks, so its place is free.
        modules.push(Arc::new(muc::Muc::new(config)));
    }
    modules.retain(|m| !config.modules.disable.iter().any(|d| d == m.name()));
    // Last: its `ver` hashes the features of every module above.
    let caps = caps::Caps::for_modules(&modules);
    modules.push(Arc::new(caps));
    modules
}

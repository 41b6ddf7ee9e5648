//! The protected content of RFC 3923 §3 and §4, built with `starling-cpim` (RFC 3862
//! Message/CPIM, RFC 3863 PIDF, RFC 3922 mappings), and whole stanzas around it:
//! a message is protected as its Message/CPIM entity (§3: the whole CPIM object, headers
//! included); directed presence as its PIDF entity (§4: `application/pidf+xml`). The secured
//! stanza keeps the addressing attributes and carries only `<e2e/>`.

use std::time::{SystemTime, UNIX_EPOCH};

use minidom::Element;
use starling_cpim::{CpimMessage, DateTime};

use crate::error::{E2eError, Result};
use crate::freshness::ReplayGuard;
use crate::payload;
use crate::protect::{self, Opened, Protection, Receiver};

fn cpim_now(now: SystemTime) -> DateTime {
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    DateTime::from_unix_millis(ms)
}

/// The Message/CPIM MIME entity (§3) of a `<message/>`, with `DateTime` = `now`.
pub fn message_content(stanza: &Element, now: SystemTime) -> Result<Vec<u8>> {
    let cpim = starling_cpim::message::xmpp_message_to_cpim(stanza, &cpim_now(now))
        .map_err(|e| E2eError::Build(e.to_string()))?;
    Ok(cpim.to_mime_bytes())
}

/// The PIDF MIME entity (§4) of a directed `<presence/>`, with `<timestamp>` = `now`.
pub fn presence_content(stanza: &Element, now: SystemTime) -> Result<Vec<u8>> {
    if stanza.attr("to").is_none() {
        return Err(E2eError::Build(
            "RFC 3923 §4 protects only directed presence".into(),
        ));
    }
    let pidf = starling_cpim::presence::xmpp_presence_to_pidf(stanza, Some(&cpim_now(now)))
        .map_err(|e| E2eError::Build(e.to_string()))?;
    let mut out = b"Content-Type: application/pidf+xml; charset=utf-8\r\n\r\n".to_vec();
    out.extend_from_slice(&pidf.to_bytes());
    Ok(out)
}

/// Secures a `<message/>` or directed `<presence/>`: builds its content, protects it, and
/// returns a stanza of the same kind with the same `from`/`to`/`id`/`type` whose only child
/// is `<e2e/>`.
pub fn secure_stanza(
    stanza: &Element,
    now: SystemTime,
    protection: &Protection<'_>,
) -> Result<Element> {
    let content = match stanza.name() {
        "message" => message_content(stanza, now)?,
        "presence" => presence_content(stanza, now)?,
        other => return Err(E2eError::Build(format!("cannot secure <{other}/>"))),
    };
    let object = protect::protect(&content, protection)?;
    let mut secured = Element::builder(stanza.name(), stanza.ns());
    for name in ["from", "to", "id", "type"] {
        if let Some(value) = stanza.attr(name) {
            let name = minidom::rxml::NcName::try_from(name).expect("valid NCName");
            secured = secured.attr(name, value);
        }
    }
    Ok(secured.append(payload::wrap(&object)?).build())
}

/// Opens the `<e2e/>` of a received stanza, with its `from` as the sender; for a message also
/// parses the Message/CPIM content.
pub fn open_stanza(
    stanza: &Element,
    receiver: &Receiver<'_>,
    now: SystemTime,
    guard: Option<&mut ReplayGuard>,
) -> Result<(Opened, Option<CpimMessage>)> {
    let e2e = payload::find(stanza)
        .ok_or_else(|| E2eError::MalformedPayload("no <e2e/> in stanza".into()))?;
    let sender = stanza
        .attr("from")
        .ok_or_else(|| E2eError::MalformedPayload("stanza has no from".into()))?;
    let opened = protect::open(&payload::unwrap(e2e)?, sender, receiver, now, guard)?;
    let cpim = match stanza.name() {
        "message" => Some(
            CpimMessage::parse_mime(&opened.content)
                .map_err(|e| E2eError::MalformedPayload(e.to_string()))?,
        ),
        _ => None,
    };
    Ok((opened, cpim))
}

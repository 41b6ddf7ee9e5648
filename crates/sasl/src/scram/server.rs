//! The SCRAM server state machine (RFC 5802 §5, §6 and §7; RFC 7677; channel binding per
//! RFC 9266 and RFC 5929): client-first -> (credentials from the caller) -> server-first ->
//! client-final -> server-final.
//!
//! Unknown users: the exchange goes on with a salt derived from the username and a server
//! secret and with random keys, so the server-first message looks like a real one and is the
//! same on every attempt; it fails only at the end, like a wrong password.

use std::sync::OnceLock;

use subtle::ConstantTimeEq;

use super::syntax::{self, CbindFlag};
use super::{random_nonce, xor, ScramCredentials, ScramHash};
use crate::session::Step;
use crate::{ChannelBinding, ChannelBindingType, Failure, DEFAULT_ITERATIONS};
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCaseMapped;

/// A per-process secret for fake salts, used unless the caller configures a stable one.
fn process_fake_salt_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        key
    })
}

pub(crate) struct ScramServer {
    hash: ScramHash,
    /// Whether this is the -PLUS mechanism (channel binding required).
    plus: bool,
    /// Channel-binding data of the connection, by type.
    bindings: Vec<ChannelBinding>,
    /// Whether a -PLUS mechanism was advertised: then the `y` flag means a downgrade.
    plus_offered: bool,
    /// Server nonce part; `None` draws a random one (a fixed one is for the RFC vectors).
    fixed_nonce: Option<String>,
    /// Secret for fake salts of unknown users; `None` uses the per-process secret.
    fake_salt_key: Option<Vec<u8>>,
    state: State,
}

enum State {
    /// Waiting for client-first; `prompted` once an empty challenge asked for it.
    Start { prompted: bool },
    /// Waiting for the caller's [`ScramServer::provide_credentials`].
    NeedCredentials(ClientFirstData),
    /// server-first sent, waiting for client-final.
    WaitFinal(Box<Pending>),
    /// Succeeded or failed: nothing more is accepted.
    Done,
}

/// What the server keeps of the client-first message.
struct ClientFirstData {
    /// The GS2 header followed by the channel-binding data: what `c=` must encode.
    cbind_input: Vec<u8>,
    bare: String,
    client_nonce: String,
    username: String,
    authzid: Option<String>,
}

struct Pending {
    first: ClientFirstData,
    server_first: String,
    /// client nonce + server nonce, which client-final must repeat.
    nonce: String,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
    /// False for an unknown user: the proof can never be accepted.
    genuine: bool,
}

impl ScramServer {
    pub(crate) fn new(
        hash: ScramHash,
        plus: bool,
        bindings: Vec<ChannelBinding>,
        plus_offered: bool,
    ) -> ScramServer {
        ScramServer {
            hash,
            plus,
            bindings,
            plus_offered,
            fixed_nonce: None,
            fake_salt_key: None,
            state: State::Start { prompted: false },
        }
    }

    pub(crate) fn set_fixed_nonce(&mut self, nonce: &str) {
        self.fixed_nonce = Some(nonce.to_owned());
    }

    pub(crate) fn set_fake_salt_key(&mut self, key: &[u8]) {
        self.fake_salt_key = Some(key.to_vec());
    }

    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start { prompted } => {
                if input.is_empty() && !prompted {
                    // No initial response: ask for client-first (RFC 6120 §6.4.2).
                    self.state = State::Start { prompted: true };
                    return Ok(Step::Challenge(Vec::new()));
                }
                let first = self.client_first(input)?;
                let step = Step::NeedCredentials {
                    username: first.username.clone(),
                    hash: self.hash,
                };
                self.state = State::NeedCredentials(first);
                Ok(step)
            }
            State::WaitFinal(pending) => self.client_final(*pending, input),
            State::NeedCredentials(_) | State::Done => Err(Failure::MalformedRequest),
        }
    }

    pub(crate) fn provide_credentials(
        &mut self,
        creds: Option<ScramCredentials>,
    ) -> Result<Step, Failure> {
        let first = match std::mem::replace(&mut self.state, State::Done) {
            State::NeedCredentials(first) => first,
            _ => return Err(Failure::TemporaryAuthFailure),
        };
        let (salt, iterations, stored_key, server_key, genuine) = match creds {
            Some(c) if c.usable_with(self.hash) => {
                (c.salt, c.iterations, c.stored_key, c.server_key, true)
            }
            Some(_) => return Err(Failure::TemporaryAuthFailure),
            None => {
                let mut keys = vec![0u8; 2 * self.hash.output_len()];
                rand::fill(keys.as_mut_slice());
                let server_key = keys.split_off(self.hash.output_len());
                let salt = self.fake_salt(&first.username);
                (salt, DEFAULT_ITERATIONS, keys, server_key, false)
            }
        };
        let server_nonce = self.fixed_nonce.clone().unwrap_or_else(random_nonce);
        let nonce = format!("{}{}", first.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={iterations}",
            syntax::base64_encode(&salt)
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::WaitFinal(Box::new(Pending {
            first,
            server_first,
            nonce,
            stored_key,
            server_key,
            genuine,
        }));
        Ok(Step::Challenge(challenge))
    }

    /// Salt for an unknown user: HMAC(secret, mechanism hash name ‖ 0 ‖ username), 16 bytes,
    /// so it is stable across attempts and looks like a random per-account salt.
    fn fake_salt(&self, username: &str) -> Vec<u8> {
        let key = match &self.fake_salt_key {
            Some(key) => key.as_slice(),
            None => process_fake_salt_key().as_slice(),
        };
        let mut data = Vec::with_capacity(username.len() + 16);
        data.extend_from_slice(self.hash.name().as_bytes());
        data.push(0);
        data.extend_from_slice(username.as_bytes());
        let mut salt = ScramHash::Sha256.hmac(key, &data);
        salt.truncate(16);
        salt
    }

    fn client_first(&self, input: &[u8]) -> Result<ClientFirstData, Failure> {
        let msg = syntax::parse_client_first(syntax::message_str(input)?)?;
        let cbind_data: &[u8] = match (&msg.flag, self.plus) {
            // p= on a mechanism without channel binding (RFC 5802 §6).
            (CbindFlag::Required(_), false) => return Err(Failure::MalformedRequest),
            // -PLUS chosen but no binding requested.
            (CbindFlag::No | CbindFlag::ClientOnly, true) => return Err(Failure::MalformedRequest),
            (CbindFlag::Required(name), true) => {
                let kind = ChannelBindingType::from_name(name).ok_or(Failure::NotAuthorized)?;
                &self
                    .bindings
                    .iter()
                    .find(|b| b.kind == kind)
                    .ok_or(Failure::NotAuthorized)?
                    .data
            }
            // The client could bind but thinks we cannot, while we offered -PLUS: someone
            // removed -PLUS from our feature list (RFC 5802 §6).
            (CbindFlag::ClientOnly, false) if self.plus_offered => {
                return Err(Failure::NotAuthorized)
            }
            (CbindFlag::ClientOnly | CbindFlag::No, false) => &[],
        };
        let username = UsernameCaseMapped::enforce(msg.username.as_str())
            .map_err(|_| Failure::NotAuthorized)?
            .into_owned();
        let mut cbind_input = msg.gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(cbind_data);
        Ok(ClientFirstData {
            cbind_input,
            bare: msg.bare.to_owned(),
            client_nonce: msg.nonce.to_owned(),
            username,
            authzid: msg.authzid,
        })
    }

    fn client_final(&mut self, pending: Pending, input: &[u8]) -> Result<Step, Failure> {
        let msg = syntax::parse_client_final(syntax::message_str(input)?)?;
        if msg.proof.len() != self.hash.output_len() {
            return Err(Failure::MalformedRequest);
        }
        let binding_ok = msg
            .channel_binding
            .as_slice()
            .ct_eq(&pending.first.cbind_input);
        let nonce_ok = msg.nonce.as_bytes().ct_eq(pending.nonce.as_bytes());

        let auth_message = format!(
            "{},{},{}",
            pending.first.bare, pending.server_first, msg.without_proof
        );
        let client_signature = self.hash.hmac(&pending.stored_key, auth_message.as_bytes());
        let client_key = xor(&msg.proof, &client_signature);
        let proof_ok = self.hash.digest(&client_key).ct_eq(&pending.stored_key);

        let genuine = subtle::Choice::from(u8::from(pending.genuine));
        if !bool::from(binding_ok & nonce_ok & proof_ok & genuine) {
            return Err(Failure::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&pending.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", syntax::base64_encode(&server_signature));
        Ok(Step::Success {
            username: pending.first.username,
            authzid: pending.first.authzid,
            additional_data: Some(server_final.into_bytes()),
        })
    }
}

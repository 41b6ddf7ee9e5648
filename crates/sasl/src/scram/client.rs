//! The SCRAM client (RFC 5802 §5 and §7, RFC 7677, channel binding per RFC 9266 and
//! RFC 5929), used by Starling's client library, its tests and the benchmark.
//!
//! The client checks what a client must: the server nonce extends ours, the iteration count
//! is sane (at least [`ScramClient::MIN_ITERATIONS`], the RFC 7677 §4 recommendation, so a
//! man in the middle cannot make offline guessing cheap), and the server signature matches.

use subtle::ConstantTimeEq;

use super::syntax::{self, ServerFinal};
use super::{prepare_password, random_nonce, xor, ScramCredentials, ScramHash};
use crate::{ChannelBinding, Failure, Mechanism};

/// A client-side SCRAM exchange: `client_first` -> `handle_server_first` ->
/// `verify_server_final`.
pub struct ScramClient {
    hash: ScramHash,
    username: String,
    /// OpaqueString-prepared password, or why it could not be prepared (reported by
    /// `handle_server_first`, since `new` cannot fail).
    password: Result<String, Failure>,
    authzid: Option<String>,
    /// Channel-binding data of our TLS connection, if any.
    binding: Option<ChannelBinding>,
    /// Whether the server advertised -PLUS: decides between `p=` and `y`.
    server_supports_plus: bool,
    nonce: String,
    /// Set by `client_first`.
    gs2_header: String,
    client_first_bare: String,
    /// A cached (salt, iterations, SaltedPassword) to skip PBKDF2 when they match.
    cached: Option<(Vec<u8>, u32, Vec<u8>)>,
    /// SaltedPassword of this exchange, once computed.
    salted: Option<Vec<u8>>,
    /// The server's salt and iteration count of this exchange, from server-first.
    salt_params: Option<(Vec<u8>, u32)>,
    /// The ServerSignature we expect in server-final.
    expected_signature: Option<Vec<u8>>,
    state: ClientState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Initial,
    SentFirst,
    SentFinal,
    Done,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism())
            .field("username", &self.username)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Lowest iteration count the client accepts from a server.
    pub const MIN_ITERATIONS: u32 = 4096;
    /// Highest iteration count the client accepts (bounds the work a server can ask for).
    pub const MAX_ITERATIONS: u32 = 1 << 22;

    /// A new exchange. With `binding` and `server_supports_plus` the client uses the -PLUS
    /// mechanism (`p=<type>`); with a binding but no -PLUS offered it sends `y` (so a server
    /// that did offer -PLUS detects the downgrade); without a binding it sends `n`.
    pub fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
        binding: Option<ChannelBinding>,
        server_supports_plus: bool,
    ) -> ScramClient {
        ScramClient {
            hash,
            username: username.to_owned(),
            password: prepare_password(password),
            authzid: None,
            binding,
            server_supports_plus,
            nonce: random_nonce(),
            gs2_header: String::new(),
            client_first_bare: String::new(),
            cached: None,
            salt_params: None,
            salted: None,
            expected_signature: None,
            state: ClientState::Initial,
        }
    }

    /// Requests to act as `authzid` (sent as `a=` in the GS2 header).
    pub fn with_authzid(mut self, authzid: &str) -> ScramClient {
        self.authzid = Some(authzid.to_owned());
        self
    }

    /// Uses a fixed client nonce (for the RFC test vectors only).
    #[doc(hidden)]
    pub fn with_nonce(mut self, nonce: &str) -> ScramClient {
        self.nonce = nonce.to_owned();
        self
    }

    /// Reuses a SaltedPassword computed by an earlier login when the server sends the same
    /// salt and iteration count, skipping PBKDF2 (as real clients cache it).
    pub fn with_salted_password(
        mut self,
        salt: Vec<u8>,
        iterations: u32,
        salted: Vec<u8>,
    ) -> ScramClient {
        self.cached = Some((salt, iterations, salted));
        self
    }

    /// The mechanism to request in `<auth mechanism=…>`.
    pub fn mechanism(&self) -> Mechanism {
        Mechanism::scram(self.hash, self.uses_channel_binding())
    }

    fn uses_channel_binding(&self) -> bool {
        self.binding.is_some() && self.server_supports_plus
    }

    /// The SaltedPassword computed (or reused) for this login, after `handle_server_first`.
    pub fn salted_password(&self) -> Option<&[u8]> {
        self.salted.as_deref()
    }

    /// What a client caches to skip PBKDF2 at its next login, after `handle_server_first`:
    /// the server's salt, the iteration count and the SaltedPassword (to hand back through
    /// [`ScramClient::with_salted_password`]). Worth keeping only once the server's
    /// signature has been verified.
    pub fn salted_credentials(&self) -> Option<(&[u8], u32, &[u8])> {
        let (salt, iterations) = self.salt_params.as_ref()?;
        Some((salt, *iterations, self.salted.as_deref()?))
    }

    /// The client-first-message (the initial response of `<auth/>`).
    pub fn client_first(&mut self) -> Vec<u8> {
        let flag = match &self.binding {
            Some(b) if self.server_supports_plus => format!("p={}", b.kind.name()),
            Some(_) => "y".to_owned(),
            None => "n".to_owned(),
        };
        let authzid = self
            .authzid
            .as_deref()
            .map(|a| format!("a={}", syntax::encode_saslname(a)))
            .unwrap_or_default();
        self.gs2_header = format!("{flag},{authzid},");
        self.client_first_bare = format!(
            "n={},r={}",
            syntax::encode_saslname(&self.username),
            self.nonce
        );
        self.state = ClientState::SentFirst;
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Answers the server-first-message with the client-final-message.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, Failure> {
        if self.state != ClientState::SentFirst {
            return Err(Failure::MalformedRequest);
        }
        self.state = ClientState::Done;
        let server_first = syntax::message_str(msg)?;
        let parsed = syntax::parse_server_first(server_first)?;
        if parsed.nonce.len() <= self.nonce.len() || !parsed.nonce.starts_with(&self.nonce) {
            return Err(Failure::NotAuthorized);
        }
        if !(Self::MIN_ITERATIONS..=Self::MAX_ITERATIONS).contains(&parsed.iterations)
            || parsed.salt.is_empty()
        {
            return Err(Failure::NotAuthorized);
        }
        let password = self.password.clone()?;
        let salted = match self.cached.take() {
            Some((salt, iterations, salted))
                if salt == parsed.salt
                    && iterations == parsed.iterations
                    && salted.len() == self.hash.output_len() =>
            {
                salted
            }
            _ => self
                .hash
                .hi(password.as_bytes(), &parsed.salt, parsed.iterations),
        };
        let keys = ScramCredentials::from_salted(self.hash, Vec::new(), parsed.iterations, &salted);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        self.salted = Some(salted);
        self.salt_params = Some((parsed.salt.clone(), parsed.iterations));

        let mut cbind_input = self.gs2_header.as_bytes().to_vec();
        if self.uses_channel_binding() {
            if let Some(binding) = &self.binding {
                cbind_input.extend_from_slice(&binding.data);
            }
        }
        let without_proof = format!(
            "c={},r={}",
            syntax::base64_encode(&cbind_input),
            parsed.nonce
        );
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );
        let client_signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        self.expected_signature = Some(self.hash.hmac(&keys.server_key, auth_message.as_bytes()));
        self.state = ClientState::SentFinal;
        Ok(format!("{without_proof},p={}", syntax::base64_encode(&proof)).into_bytes())
    }

    /// Checks the server-final-message (the `<success/>` additional data): only a server
    /// that knows the credentials can produce it.
    pub fn verify_server_final(&mut self, msg: &[u8]) -> Result<(), Failure> {
        if self.state != ClientState::SentFinal {
            return Err(Failure::MalformedRequest);
        }
        self.state = ClientState::Done;
        let expected = self
            .expected_signature
            .take()
            .ok_or(Failure::MalformedRequest)?;
        match syntax::parse_server_final(syntax::message_str(msg)?)? {
            ServerFinal::Verifier(signature) if bool::from(signature.ct_eq(&expected)) => Ok(()),
            ServerFinal::Verifier(_) | ServerFinal::Error(_) => Err(Failure::NotAuthorized),
        }
    }
}

//! Encryption (RFC 3923 §3.2/§4.2 with §6; RFC 8551 §3.3; RFC 5652 §6; RFC 5083/5084): the
//! protected MIME entity (or a `multipart/signed` one, for sign-then-encrypt) becomes
//! `application/pkcs7-mime; smime-type=enveloped-data` (CMS EnvelopedData, AES-CBC) or
//! `smime-type=authEnveloped-data` (CMS AuthEnvelopedData, AES-GCM, RFC 8551 §2.7).
//!
//! Recipients are KeyTransRecipientInfo with RSA PKCS#1 v1.5 (RFC 3370 §4.2.1, RFC 3923's
//! mandatory choice) or RSAES-OAEP (RFC 3560). EnvelopedData is built with `cms`'s builder
//! and our own recipient-info builder; the `cms` crate has no AuthEnvelopedData builder, so
//! that structure is assembled here. Decryption is ours: key transport (v1.5, OAEP with
//! SHA-1/SHA-2), then AES-128/192/256-CBC, 3DES-CBC (RFC 3923 §6 names it) or AES-GCM.
//!
//! PKCS#1 v1.5 decryption is a padding oracle in an interactive setting; a receiver must
//! answer every decryption failure with the same `decryption-failed` condition, as
//! [`crate::E2eError::condition`] does.

use aes_gcm::aead::{Aead, Payload};
use cipher::block_padding::Pkcs7;
use cipher::{BlockModeDecrypt, KeyInit, KeyIvInit};
use cms::authenveloped_data::AuthEnvelopedData;
use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, RecipientInfoBuilder, RecipientInfoType,
};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Any, Decode, Encode, Sequence};
use rand::rngs::ThreadRng;
use rsa::{Oaep, Pkcs1v15Encrypt, PublicKey};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use crate::algs::{
    self, AES128_CBC, AES128_GCM, AES192_CBC, AES256_CBC, AES256_GCM, DES_EDE3_CBC,
    ID_AUTH_ENVELOPED_DATA, ID_DATA, ID_ENVELOPED_DATA, ID_MGF1, ID_SHA1, ID_SHA256, ID_SHA384,
    ID_SHA512, RSAES_OAEP, RSA_ENCRYPTION,
};
use crate::certs::Credential;
use crate::error::{E2eError, Result};
use crate::mime::{self, Entity};
use crate::sign::is_pkcs7_mime;

/// Content-encryption algorithm for what we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentCipher {
    /// AES-128-CBC in EnvelopedData: RFC 3923's interoperability floor (RFC 8551 MUST-).
    Aes128Cbc,
    /// AES-256-CBC in EnvelopedData.
    Aes256Cbc,
    /// AES-128-GCM in AuthEnvelopedData (RFC 8551 §2.7 MUST).
    Aes128Gcm,
    /// AES-256-GCM in AuthEnvelopedData (RFC 8551's choice when capabilities are unknown).
    Aes256Gcm,
}

impl ContentCipher {
    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            ContentCipher::Aes128Cbc => AES128_CBC,
            ContentCipher::Aes256Cbc => AES256_CBC,
            ContentCipher::Aes128Gcm => AES128_GCM,
            ContentCipher::Aes256Gcm => AES256_GCM,
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<ContentCipher> {
        [
            ContentCipher::Aes128Cbc,
            ContentCipher::Aes256Cbc,
            ContentCipher::Aes128Gcm,
            ContentCipher::Aes256Gcm,
        ]
        .into_iter()
        .find(|c| c.oid() == *oid)
    }

    /// True for the AEAD ciphers, which travel in AuthEnvelopedData.
    pub fn is_authenticated(self) -> bool {
        matches!(self, ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm)
    }

    /// The `smime-type` parameter of the resulting `application/pkcs7-mime` entity.
    pub fn smime_type(self) -> &'static str {
        if self.is_authenticated() {
            "authEnveloped-data"
        } else {
            "enveloped-data"
        }
    }
}

/// How the content-encryption key reaches an RSA recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTransport {
    /// RSAES-PKCS1-v1_5 (RFC 3923 §6, RFC 8551 MUST-).
    RsaPkcs1v15,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 8551 SHOULD+).
    RsaOaepSha256,
}

/// GCMParameters (RFC 5084 §3.2).
#[derive(Debug, Clone, Sequence)]
struct GcmParameters {
    nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    icv_len: u8,
}

fn default_icv_len() -> u8 {
    12
}

/// RSAES-OAEP-params (RFC 8017 Appendix A.2.1); absent fields mean SHA-1 / MGF1-SHA-1 / empty
/// label.
#[derive(Debug, Clone, Sequence)]
struct OaepParameters {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    label_source: Option<AlgorithmIdentifierOwned>,
}

/// A KeyTransRecipientInfo builder for RSA with either padding (the `cms` builder's own one
/// only does PKCS#1 v1.5).
struct RsaRecipient {
    rid: RecipientIdentifier,
    key: PublicKey,
    transport: KeyTransport,
}

impl RecipientInfoBuilder for RsaRecipient {
    type Rng = ThreadRng;

    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Ktri
    }

    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V0
    }

    fn build_with_rng(
        &mut self,
        content_encryption_key: &[u8],
        rng: &mut ThreadRng,
    ) -> std::result::Result<RecipientInfo, cms::builder::Error> {
        let failed = |e: &dyn std::fmt::Display| cms::builder::Error::Builder(e.to_string());
        let (encrypted, key_enc_alg) = match self.transport {
            KeyTransport::RsaPkcs1v15 => (
                self.key
                    .encrypt(rng, Pkcs1v15Encrypt, content_encryption_key)
                    .map_err(|e| failed(&e))?,
                AlgorithmIdentifierOwned {
                    oid: RSA_ENCRYPTION,
                    parameters: Some(Any::from(der::asn1::Null)),
                },
            ),
            KeyTransport::RsaOaepSha256 => {
                let sha256 = AlgorithmIdentifierOwned {
                    oid: ID_SHA256,
                    parameters: None,
                };
                let params = OaepParameters {
                    hash: Some(sha256.clone()),
                    mask_gen: Some(AlgorithmIdentifierOwned {
                        oid: ID_MGF1,
                        parameters: Some(Any::encode_from(&sha256)?),
                    }),
                    label_source: None,
                };
                (
                    self.key
                        .encrypt(rng, Oaep::<sha2::Sha256>::new(), content_encryption_key)
                        .map_err(|e| failed(&e))?,
                    AlgorithmIdentifierOwned {
                        oid: RSAES_OAEP,
                        parameters: Some(Any::encode_from(&params)?),
                    },
                )
            }
        };
        Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: self.rid.clone(),
            key_enc_alg,
            enc_key: OctetString::new(encrypted)?,
        }))
    }
}

fn recipient_for(cert: &Certificate, transport: KeyTransport) -> Result<RsaRecipient> {
    let tbs = cert.tbs_certificate();
    Ok(RsaRecipient {
        rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        key: algs::rsa_public_key(tbs.subject_public_key_info()).map_err(E2eError::Build)?,
        transport,
    })
}

/// Encrypts a MIME entity for the recipients and returns the `application/pkcs7-mime` entity.
/// The entity is canonicalized to CRLF first.
pub fn encrypt(
    entity: &[u8],
    recipients: &[Certificate],
    cipher: ContentCipher,
    transport: KeyTransport,
) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(E2eError::Build("no recipients".into()));
    }
    let content = mime::canonicalize(entity);
    let der = enveloped_der(&content, recipients, cipher, transport)?;
    let mut out = format!(
        "Content-Type: application/pkcs7-mime; smime-type={}; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; handling=required; filename=smime.p7m\r\n\r\n",
        cipher.smime_type()
    )
    .into_bytes();
    out.extend_from_slice(mime::encode_base64_lines(&der).as_bytes());
    Ok(out)
}

/// The DER ContentInfo (EnvelopedData or AuthEnvelopedData) of `content`, exactly as given.
pub fn enveloped_der(
    content: &[u8],
    recipients: &[Certificate],
    cipher: ContentCipher,
    transport: KeyTransport,
) -> Result<Vec<u8>> {
    let build = |e: &dyn std::fmt::Display| E2eError::Build(e.to_string());
    let mut rng = rand::rng();
    let mut builders = recipients
        .iter()
        .map(|c| recipient_for(c, transport))
        .collect::<Result<Vec<_>>>()?;
    let (content_type, body) = match cipher {
        ContentCipher::Aes128Cbc | ContentCipher::Aes256Cbc => {
            let algorithm = if cipher == ContentCipher::Aes128Cbc {
                ContentEncryptionAlgorithm::Aes128Cbc
            } else {
                ContentEncryptionAlgorithm::Aes256Cbc
            };
            let mut builder =
                EnvelopedDataBuilder::<ThreadRng>::new(None, content, algorithm, None)
                    .map_err(|e| build(&e))?;
            for recipient in builders {
                builder
                    .add_recipient_info(recipient)
                    .map_err(|e| build(&e))?;
            }
            let enveloped = builder.build_with_rng(&mut rng).map_err(|e| build(&e))?;
            (
                ID_ENVELOPED_DATA,
                Any::encode_from(&enveloped).map_err(|e| build(&e))?,
            )
        }
        ContentCipher::Aes128Gcm | ContentCipher::Aes256Gcm => {
            let key_len = if cipher == ContentCipher::Aes128Gcm {
                16
            } else {
                32
            };
            let mut key = vec![0u8; key_len];
            rand::fill(&mut key[..]);
            let nonce: [u8; 12] = rand::random();
            let sealed = gcm_seal(&key, &nonce, content).map_err(|e| build(&e))?;
            let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
            let recip_infos = builders
                .iter_mut()
                .map(|b| b.build_with_rng(&key, &mut rng))
                .collect::<std::result::Result<Vec<_>, cms::builder::Error>>()
                .map_err(|e| build(&e))?;
            key.fill(0);
            let params = GcmParameters {
                nonce: OctetString::new(nonce.to_vec()).map_err(|e| build(&e))?,
                icv_len: 16,
            };
            let auth_enveloped = AuthEnvelopedData {
                version: CmsVersion::V0,
                originator_info: None,
                recip_infos: RecipientInfos::try_from(recip_infos).map_err(|e| build(&e))?,
                auth_encrypted_content_info: EncryptedContentInfo {
                    content_type: ID_DATA,
                    content_enc_alg: AlgorithmIdentifierOwned {
                        oid: cipher.oid(),
                        parameters: Some(Any::encode_from(&params).map_err(|e| build(&e))?),
                    },
                    encrypted_content: Some(OctetString::new(ciphertext).map_err(|e| build(&e))?),
                },
                auth_attrs: None,
                mac: OctetString::new(tag).map_err(|e| build(&e))?,
                unauth_attrs: None,
            };
            (
                ID_AUTH_ENVELOPED_DATA,
                Any::encode_from(&auth_enveloped).map_err(|e| build(&e))?,
            )
        }
    };
    ContentInfo {
        content_type,
        content: body,
    }
    .to_der()
    .map_err(|e| build(&e))
}

fn gcm_seal(
    key: &[u8],
    nonce: &[u8; 12],
    plaintext: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let payload = Payload {
        msg: plaintext,
        aad: &[],
    };
    let result = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(|e| e.to_string())?
            .encrypt(&(*nonce).into(), payload),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(|e| e.to_string())?
            .encrypt(&(*nonce).into(), payload),
    };
    result.map_err(|e| e.to_string())
}

/// True if the entity is an encrypted S/MIME object (`enveloped-data` or
/// `authEnveloped-data`).
pub fn is_encrypted(entity: &Entity<'_>) -> bool {
    let ct = entity.content_type();
    is_pkcs7_mime(ct.mime_type())
        && ct.param("smime-type").is_none_or(|t| {
            t.eq_ignore_ascii_case("enveloped-data") || t.eq_ignore_ascii_case("authEnveloped-data")
        })
}

/// Decrypts an `application/pkcs7-mime` entity (with its headers) and returns the inner MIME
/// entity, canonicalized. The input is canonicalized to CRLF first.
pub fn decrypt(object: &[u8], me: &Credential) -> Result<Vec<u8>> {
    let canonical = mime::canonicalize(object);
    let entity = Entity::parse(&canonical).map_err(|e| malformed(&e.to_string()))?;
    if !is_encrypted(&entity) {
        return Err(malformed("not an encrypted S/MIME entity"));
    }
    let der = entity
        .decoded_body()
        .map_err(|e| malformed(&e.to_string()))?;
    Ok(mime::canonicalize(&decrypt_der(&der, me)?))
}

/// Decrypts a DER (or BER) ContentInfo holding EnvelopedData or AuthEnvelopedData.
pub fn decrypt_der(der: &[u8], me: &Credential) -> Result<Vec<u8>> {
    let info = ContentInfo::from_der(der)
        .or_else(|_| ContentInfo::from_ber(der))
        .map_err(|e| malformed(&format!("ContentInfo: {e}")))?;
    match info.content_type {
        ID_ENVELOPED_DATA => {
            let enveloped: EnvelopedData = info
                .content
                .decode_as()
                .map_err(|e| malformed(&format!("EnvelopedData: {e}")))?;
            let key = unwrap_key(&enveloped.recip_infos, me)?;
            let eci = &enveloped.encrypted_content;
            let ciphertext = eci
                .encrypted_content
                .as_ref()
                .ok_or_else(|| malformed("detached encrypted content"))?;
            decrypt_cbc(&eci.content_enc_alg, &key, ciphertext.as_bytes())
        }
        ID_AUTH_ENVELOPED_DATA => {
            let auth: AuthEnvelopedData = info
                .content
                .decode_as()
                .map_err(|e| malformed(&format!("AuthEnvelopedData: {e}")))?;
            let key = unwrap_key(&auth.recip_infos, me)?;
            let eci = &auth.auth_encrypted_content_info;
            let ciphertext = eci
                .encrypted_content
                .as_ref()
                .ok_or_else(|| malformed("detached encrypted content"))?;
            // RFC 5083 §2.2: the MAC covers the DER of authAttrs (as a SET OF) when present.
            let aad = match &auth.auth_attrs {
                Some(attrs) => attrs.to_der().map_err(|e| malformed(&e.to_string()))?,
                None => Vec::new(),
            };
            decrypt_gcm(
                &eci.content_enc_alg,
                &key,
                ciphertext.as_bytes(),
                auth.mac.as_bytes(),
                &aad,
            )
        }
        other => Err(malformed(&format!(
            "content type {other} is not encrypted data"
        ))),
    }
}

fn recipient_matches(rid: &RecipientIdentifier, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(isn) => {
            isn.serial_number == *tbs.serial_number()
                && isn.issuer.to_der().ok() == tbs.issuer().to_der().ok()
        }
        RecipientIdentifier::SubjectKeyIdentifier(ski) => {
            matches!(tbs.get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, own))) if own == *ski)
        }
    }
}

/// Finds our KeyTransRecipientInfo and recovers the content-encryption key.
fn unwrap_key(infos: &RecipientInfos, me: &Credential) -> Result<Vec<u8>> {
    let ktri = infos
        .0
        .iter()
        .find_map(|info| match info {
            RecipientInfo::Ktri(k) if recipient_matches(&k.rid, me.certificate()) => Some(k),
            _ => None,
        })
        .ok_or(E2eError::NoRecipient)?;
    let encrypted = ktri.enc_key.as_bytes();
    let failed = |_| E2eError::Decryption("key transport failed".into());
    match ktri.key_enc_alg.oid {
        RSA_ENCRYPTION => me.key().decrypt(Pkcs1v15Encrypt, encrypted).map_err(failed),
        RSAES_OAEP => {
            let params = match &ktri.key_enc_alg.parameters {
                Some(any) => any
                    .decode_as::<OaepParameters>()
                    .map_err(|e| malformed(&format!("RSAES-OAEP-params: {e}")))?,
                None => OaepParameters {
                    hash: None,
                    mask_gen: None,
                    label_source: None,
                },
            };
            if params.label_source.is_some() {
                return Err(malformed("OAEP labels are not supported"));
            }
            let hash = params.hash.map(|h| h.oid).unwrap_or(ID_SHA1);
            let mgf_hash = match params.mask_gen {
                None => ID_SHA1,
                Some(mgf) if mgf.oid == ID_MGF1 => {
                    mgf.parameters
                        .ok_or_else(|| malformed("MGF1 without hash"))?
                        .decode_as::<AlgorithmIdentifierOwned>()
                        .map_err(|e| malformed(&e.to_string()))?
                        .oid
                }
                Some(mgf) => return Err(malformed(&format!("mask generation {}", mgf.oid))),
            };
            oaep_decrypt(me, hash, mgf_hash, encrypted)
        }
        other => Err(malformed(&format!("key transport algorithm {other}"))),
    }
}

fn oaep_decrypt(
    me: &Credential,
    hash: ObjectIdentifier,
    mgf_hash: ObjectIdentifier,
    encrypted: &[u8],
) -> Result<Vec<u8>> {
    use sha1::Sha1;
    use sha2::{Sha256, Sha384, Sha512};
    let key = me.key();
    let result = match (hash, mgf_hash) {
        (ID_SHA1, ID_SHA1) => key.decrypt(Oaep::<Sha1>::new(), encrypted),
        (ID_SHA256, ID_SHA256) => key.decrypt(Oaep::<Sha256>::new(), encrypted),
        (ID_SHA256, ID_SHA1) => key.decrypt(Oaep::<Sha256, Sha1>::new_with_mgf_hash(), encrypted),
        (ID_SHA384, ID_SHA384) => key.decrypt(Oaep::<Sha384>::new(), encrypted),
        (ID_SHA512, ID_SHA512) => key.decrypt(Oaep::<Sha512>::new(), encrypted),
        _ => return Err(malformed(&format!("OAEP with {hash} / MGF1-{mgf_hash}"))),
    };
    result.map_err(|_| E2eError::Decryption("key transport failed".into()))
}

fn decrypt_cbc(alg: &AlgorithmIdentifierOwned, key: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
    let iv: OctetString = alg
        .parameters
        .as_ref()
        .ok_or_else(|| malformed("CBC without IV"))?
        .decode_as()
        .map_err(|e| malformed(&format!("CBC IV: {e}")))?;
    let iv = iv.as_bytes();
    let bad_key = |_| E2eError::Decryption("wrong key or IV size".into());
    let result = match alg.oid {
        AES128_CBC => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(bad_key)?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
        AES192_CBC => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(bad_key)?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
        AES256_CBC => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(bad_key)?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
        DES_EDE3_CBC => cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv)
            .map_err(bad_key)?
            .decrypt_padded_vec::<Pkcs7>(ciphertext),
        other => return Err(malformed(&format!("content encryption {other}"))),
    };
    result.map_err(|_| E2eError::Decryption("bad padding".into()))
}

fn decrypt_gcm(
    alg: &AlgorithmIdentifierOwned,
    key: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    let params: GcmParameters = alg
        .parameters
        .as_ref()
        .ok_or_else(|| malformed("GCM without parameters"))?
        .decode_as()
        .map_err(|e| malformed(&format!("GCMParameters: {e}")))?;
    let nonce: [u8; 12] = params
        .nonce
        .as_bytes()
        .try_into()
        .map_err(|_| malformed("only 12-byte GCM nonces are supported"))?;
    if params.icv_len != 16 || tag.len() != 16 {
        return Err(malformed("only 16-byte GCM tags are supported"));
    }
    let sealed = [ciphertext, tag].concat();
    let payload = Payload { msg: &sealed, aad };
    let bad_key = |_| E2eError::Decryption("wrong key size".into());
    let result = match alg.oid {
        AES128_GCM => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(bad_key)?
            .decrypt(&nonce.into(), payload),
        AES256_GCM => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(bad_key)?
            .decrypt(&nonce.into(), payload),
        other => return Err(malformed(&format!("authenticated encryption {other}"))),
    };
    result.map_err(|_| E2eError::Decryption("authentication tag mismatch".into()))
}

fn malformed(why: &str) -> E2eError {
    E2eError::MalformedEncrypted(why.to_string())
}

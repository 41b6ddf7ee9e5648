//! Signing (RFC 3923 §3.1/§4.1 with §6; RFC 8551 §3.5.3; RFC 5652 §5): a CMS SignedData with
//! detached content over the canonical (CRLF) bytes of the protected MIME entity, carried as
//! `multipart/signed; protocol="application/pkcs7-signature"; micalg=...`.
//!
//! Verification is ours, on the `cms`/`der` types: the content digest must equal the
//! message-digest signed attribute, the content-type attribute must equal the eContentType,
//! the RSA signature must verify over the DER of the signed attributes (RFC 5652 §5.4), the
//! signer certificate must chain to a trust anchor ([`TrustAnchors`]), and its subjectAltName
//! must name the sender (RFC 3923 §6). We also accept the opaque form
//! (`application/pkcs7-mime; smime-type=signed-data`, RFC 8551 §3.5.2) that `openssl cms
//! -sign -nodetach` writes.
//!
//! The signer also announces its content ciphers in an SMIMECapabilities attribute
//! (RFC 8551 §2.5.2) so that peers can choose AES-GCM (§2.7) when we support it.

use std::time::SystemTime;

use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use crate::algs::{
    self, DigestAlg, SignatureCheck, ID_CONTENT_TYPE, ID_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
    ID_SMIME_CAPABILITIES,
};
use crate::certs::{self, Credential, TrustAnchors};
use crate::envelope::ContentCipher;
use crate::error::{E2eError, Result};
use crate::mime::{self, Entity};

/// Signs a MIME entity (headers, empty line, body) and returns the `multipart/signed` entity.
/// The entity is canonicalized to CRLF first; the first part of the result holds exactly the
/// signed bytes.
pub fn sign(entity: &[u8], signer: &Credential, digest: DigestAlg) -> Result<Vec<u8>> {
    if digest == DigestAlg::Sha1 {
        return Err(E2eError::Build(
            "we never emit SHA-1 signatures (RFC 8551 §2.1)".into(),
        ));
    }
    let content = mime::canonicalize(entity);
    Entity::parse(&content)?;
    let der = signed_data_der(&content, signer, digest)?;
    let boundary = boundary_for(&content);
    let mut out = format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg={}; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n",
        digest.micalg()
    )
    .into_bytes();
    out.extend_from_slice(&content);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; handling=required; filename=smime.p7s\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(mime::encode_base64_lines(&der).as_bytes());
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// The detached CMS SignedData (DER ContentInfo) over `content`, exactly as given.
pub fn signed_data_der(content: &[u8], signer: &Credential, digest: DigestAlg) -> Result<Vec<u8>> {
    match digest {
        DigestAlg::Sha256 => build_signed::<sha2::Sha256>(content, signer, digest),
        DigestAlg::Sha384 => build_signed::<sha2::Sha384>(content, signer, digest),
        DigestAlg::Sha512 => build_signed::<sha2::Sha512>(content, signer, digest),
        DigestAlg::Sha1 => Err(E2eError::Build("SHA-1 signing is not offered".into())),
    }
}

fn build_signed<D>(content: &[u8], signer: &Credential, digest: DigestAlg) -> Result<Vec<u8>>
where
    D: sha2::Digest
        + const_oid::AssociatedOid
        + rsa::pkcs1v15::RsaSignatureAssociatedOid
        + sha2::digest::FixedOutputReset,
{
    let build = |e: &dyn std::fmt::Display| E2eError::Build(e.to_string());
    let eci = EncapsulatedContentInfo {
        econtent_type: ID_DATA,
        econtent: None,
    };
    let message_digest = digest.digest(content);
    let cert = signer.certificate();
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate().issuer().clone(),
        serial_number: cert.tbs_certificate().serial_number().clone(),
    });
    let mut signer_info = SignerInfoBuilder::new(
        sid,
        digest.algorithm_identifier(),
        &eci,
        Some(&message_digest),
    )
    .map_err(|e| build(&e))?;
    signer_info
        .add_signed_attribute(capabilities_attribute().map_err(|e| build(&e))?)
        .map_err(|e| build(&e))?;
    let key = rsa::pkcs1v15::SigningKey::<D>::new(signer.key().clone());
    let mut builder = SignedDataBuilder::new(&eci);
    builder
        .add_digest_algorithm(digest.algorithm_identifier())
        .map_err(|e| build(&e))?;
    for cert in signer.chain() {
        builder
            .add_certificate(CertificateChoices::Certificate(cert.clone()))
            .map_err(|e| build(&e))?;
    }
    builder
        .add_signer_info::<_, rsa::pkcs1v15::Signature>(signer_info, &key)
        .map_err(|e| build(&e))?;
    let content_info = builder.build().map_err(|e| build(&e))?;
    content_info.to_der().map_err(|e| build(&e))
}

/// SMIMECapabilities listing what [`crate::envelope::decrypt`] handles, strongest first.
fn capabilities_attribute() -> der::Result<Attribute> {
    let caps: Vec<AlgorithmIdentifierOwned> = [
        ContentCipher::Aes256Gcm,
        ContentCipher::Aes128Gcm,
        ContentCipher::Aes256Cbc,
        ContentCipher::Aes128Cbc,
    ]
    .iter()
    .map(|c| AlgorithmIdentifierOwned {
        oid: c.oid(),
        parameters: None,
    })
    .collect();
    let mut values = SetOfVec::new();
    values.insert(Any::encode_from(&caps)?)?;
    Ok(Attribute {
        oid: ID_SMIME_CAPABILITIES,
        values,
    })
}

/// A boundary that does not occur in the content.
fn boundary_for(content: &[u8]) -> String {
    loop {
        let token: [u8; 12] = rand::random();
        let boundary: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let boundary = format!("starling-{boundary}");
        if mime::find(content, boundary.as_bytes()).is_none() {
            return boundary;
        }
    }
}

/// What the receiver of a signed object needs.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// CAs trusted to issue signer certificates.
    pub anchors: &'a TrustAnchors,
    /// The stanza's `from` (full or bare JID); its bare JID must be in the certificate.
    pub sender: &'a str,
    /// The time at which certificate validity is judged.
    pub now: SystemTime,
    /// Accept SHA-1 signatures (RFC 3923 §6 mandates SHA-1; RFC 8551 made it historic).
    pub allow_sha1: bool,
    /// Certificates known out of band (the sender's, stored from an earlier message), for
    /// objects that do not carry the signer certificate.
    pub known_certificates: &'a [Certificate],
}

/// A signature that verified, from a trusted signer who is the sender.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed MIME entity (the Message/CPIM or PIDF entity, or an inner layer).
    pub content: Vec<u8>,
    /// The signer's certificate.
    pub signer: Certificate,
    /// The XMPP addresses in the signer certificate.
    pub addresses: Vec<String>,
    /// The digest the signer used.
    pub digest: DigestAlg,
    /// Content ciphers the signer announced in SMIMECapabilities that we also support.
    pub capabilities: Vec<ContentCipher>,
}

/// True if the entity is a signed S/MIME object (either form).
pub fn is_signed(entity: &Entity<'_>) -> bool {
    let ct = entity.content_type();
    ct.mime_type() == "multipart/signed"
        || (is_pkcs7_mime(ct.mime_type())
            && ct
                .param("smime-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("signed-data")))
}

pub(crate) fn is_pkcs7_mime(mime_type: &str) -> bool {
    mime_type == "application/pkcs7-mime" || mime_type == "application/x-pkcs7-mime"
}

/// Verifies a signed entity (`multipart/signed` or opaque `signed-data`), with its MIME
/// headers; the input is canonicalized to CRLF first.
pub fn verify(signed: &[u8], options: &VerifyOptions<'_>) -> Result<Verified> {
    let canonical = mime::canonicalize(signed);
    let entity = Entity::parse(&canonical).map_err(as_signed_error)?;
    let ct = entity.content_type();
    let (content, der) = if ct.mime_type() == "multipart/signed" {
        let boundary = ct
            .param("boundary")
            .ok_or_else(|| malformed("multipart/signed without boundary"))?;
        let parts = mime::split_multipart(entity.body(), boundary).map_err(as_signed_error)?;
        let [content, signature] = parts.as_slice() else {
            return Err(malformed("multipart/signed must have exactly two parts"));
        };
        let signature = Entity::parse(signature).map_err(as_signed_error)?;
        let sig_type = signature.content_type();
        if sig_type.mime_type() != "application/pkcs7-signature"
            && sig_type.mime_type() != "application/x-pkcs7-signature"
        {
            return Err(malformed("second part is not application/pkcs7-signature"));
        }
        (
            Some(content.to_vec()),
            signature.decoded_body().map_err(as_signed_error)?,
        )
    } else if is_signed(&entity) {
        (None, entity.decoded_body().map_err(as_signed_error)?)
    } else {
        return Err(malformed("not a signed S/MIME entity"));
    };
    verify_der(content, &der, options)
}

/// Verifies a DER (or BER) CMS SignedData ContentInfo; `detached` is the content when the
/// signature is detached.
pub fn verify_der(
    detached: Option<Vec<u8>>,
    der: &[u8],
    options: &VerifyOptions<'_>,
) -> Result<Verified> {
    let info = ContentInfo::from_der(der)
        .or_else(|_| ContentInfo::from_ber(der))
        .map_err(|e| malformed(&format!("ContentInfo: {e}")))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(malformed("ContentInfo is not signed-data"));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| malformed(&format!("SignedData: {e}")))?;
    let content = match (detached, &signed.encap_content_info.econtent) {
        (Some(content), None) => content,
        // eContent of id-data is an OCTET STRING; its value octets are the content.
        (None, Some(econtent)) => econtent.value().to_vec(),
        (Some(_), Some(_)) => return Err(malformed("both detached and encapsulated content")),
        (None, None) => return Err(malformed("no content to verify")),
    };
    let carried: Vec<Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let pool: Vec<Certificate> = carried
        .iter()
        .chain(options.known_certificates.iter())
        .cloned()
        .collect();
    let signer_info = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| malformed("no SignerInfo"))?;
    let signer = find_signer(&signer_info.sid, &pool)
        .ok_or_else(|| E2eError::UntrustedSigner("signer certificate not available".into()))?;
    let digest = check_signer_info(
        signer_info,
        signed.encap_content_info.econtent_type,
        &content,
        signer,
        options.allow_sha1,
    )?;
    options
        .anchors
        .validate(signer, &pool, options.now, options.allow_sha1)?;
    certs::check_signer_identity(signer, options.sender)?;
    Ok(Verified {
        content,
        signer: signer.clone(),
        addresses: certs::xmpp_addresses(signer),
        digest,
        capabilities: announced_capabilities(signer_info),
    })
}

fn find_signer<'c>(sid: &SignerIdentifier, pool: &'c [Certificate]) -> Option<&'c Certificate> {
    pool.iter().find(|c| matches_identifier(sid, c))
}

pub(crate) fn matches_identifier(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = cert.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => {
            isn.serial_number == *tbs.serial_number()
                && isn.issuer.to_der().ok() == tbs.issuer().to_der().ok()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            matches!(tbs.get_extension::<SubjectKeyIdentifier>(), Ok(Some((_, own))) if own == *ski)
        }
    }
}

/// RFC 5652 §5.4 and §5.6 for one SignerInfo; returns the digest used.
fn check_signer_info(
    info: &SignerInfo,
    content_type: ObjectIdentifier,
    content: &[u8],
    signer: &Certificate,
    allow_sha1: bool,
) -> Result<DigestAlg> {
    let digest = DigestAlg::from_oid(&info.digest_alg.oid)
        .ok_or_else(|| malformed(&format!("digest algorithm {}", info.digest_alg.oid)))?;
    let content_digest = digest.digest(content);
    let signed_bytes = match &info.signed_attrs {
        Some(attrs) => {
            let value_of = |oid: ObjectIdentifier| -> Result<&Any> {
                let attr = attrs
                    .iter()
                    .find(|a| a.oid == oid)
                    .ok_or_else(|| malformed(&format!("signed attribute {oid} missing")))?;
                match attr.values.as_slice() {
                    [one] => Ok(one),
                    _ => Err(malformed("signed attribute must have one value")),
                }
            };
            let md = value_of(ID_MESSAGE_DIGEST)?
                .decode_as::<OctetString>()
                .map_err(|e: der::Error| malformed(&e.to_string()))?;
            if md.as_bytes() != content_digest.as_slice() {
                return Err(E2eError::BadSignature(
                    "message digest does not match content".into(),
                ));
            }
            let ct = value_of(ID_CONTENT_TYPE)?
                .decode_as::<ObjectIdentifier>()
                .map_err(|e: der::Error| malformed(&e.to_string()))?;
            if ct != content_type {
                return Err(E2eError::BadSignature(
                    "content-type attribute mismatch".into(),
                ));
            }
            attrs.to_der().map_err(|e| malformed(&e.to_string()))?
        }
        None => content.to_vec(),
    };
    algs::verify_rsa(
        signer.tbs_certificate().subject_public_key_info(),
        &info.signature_algorithm,
        Some(digest),
        allow_sha1,
        &signed_bytes,
        info.signature.as_bytes(),
    )
    .map_err(|e| match e {
        SignatureCheck::Unsupported(why) => E2eError::MalformedSigned(why),
        SignatureCheck::Invalid => E2eError::BadSignature("signature value does not verify".into()),
    })?;
    Ok(digest)
}

fn announced_capabilities(info: &SignerInfo) -> Vec<ContentCipher> {
    let Some(attrs) = &info.signed_attrs else {
        return Vec::new();
    };
    let Some(attr) = attrs.iter().find(|a| a.oid == ID_SMIME_CAPABILITIES) else {
        return Vec::new();
    };
    attr.values
        .iter()
        .filter_map(|v| v.decode_as::<Vec<AlgorithmIdentifierOwned>>().ok())
        .flatten()
        .filter_map(|alg| ContentCipher::from_oid(&alg.oid))
        .collect()
}

fn malformed(why: &str) -> E2eError {
    E2eError::MalformedSigned(why.to_string())
}

fn as_signed_error(e: E2eError) -> E2eError {
    match e {
        E2eError::MalformedPayload(why) => E2eError::MalformedSigned(why),
        other => other,
    }
}

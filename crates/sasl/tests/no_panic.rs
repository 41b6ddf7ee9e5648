//! Property tests: no input, in any state, makes a mechanism panic (security checklist 28;
//! the SCRAM/SASL parsers are also fuzz targets).

use proptest::prelude::*;
use starling_sasl::*;

fn any_mechanism() -> impl Strategy<Value = Mechanism> {
    prop::sample::select(Mechanism::ALL.to_vec())
}

/// Mostly SCRAM-shaped text, sometimes arbitrary bytes.
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "[npyacrmsiv=,=2C3D0-9a-zA-Z+/\\x00]{0,80}".prop_map(String::into_bytes),
        "(n|y|p=tls-exporter|p=tls-server-end-point),(a=[a-z=]{1,5})?,n=[a-z=,]{0,6},r=[a-z]{0,6}(,[a-z]=[a-z]{0,3}){0,2}"
            .prop_map(String::into_bytes),
        "c=[a-zA-Z0-9+/=]{0,12},r=[a-zA-Z0-9]{0,12},p=[a-zA-Z0-9+/=]{0,44}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn server_never_panics(
        mech in any_mechanism(),
        plus_offered in any::<bool>(),
        messages in prop::collection::vec(message(), 1..4),
        known in any::<bool>(),
    ) {
        let bindings = vec![
            ChannelBinding { kind: ChannelBindingType::TlsExporter, data: vec![1; 32] },
            ChannelBinding { kind: ChannelBindingType::TlsServerEndPoint, data: vec![2; 32] },
        ];
        let mut server = ServerSession::new(mech, bindings, plus_offered);
        for msg in messages {
            match server.step(&msg) {
                Ok(Step::NeedCredentials { hash, .. }) => {
                    // Few iterations: this test is about parsing, not key stretching.
                    let creds = known.then(|| derive_credentials("pw", hash, 2, b"salt").unwrap());
                    let _ = server.provide_credentials(creds);
                }
                Ok(_) => {}
                Err(_) => {}
            }
        }
    }

    #[test]
    fn client_never_panics(server_first in message(), server_final in message()) {
        let mut client = ScramClient::new(ScramHash::Sha1, "user", "pw", None, false).with_nonce("a");
        client.client_first();
        let _ = client.handle_server_first(&server_first);
        let _ = client.verify_server_final(&server_final);
    }
}

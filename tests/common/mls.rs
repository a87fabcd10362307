//! (Included by the MLS tests only: `#[path = "common/mls.rs"] mod mls;`.)
//! An MLS device as a client would run it, on openmls: its credential
//! and signed device object (draft §9.2), key packages (§9.3), and its
//! copy of a room's group: commits as `m.mls.commit` contents, Welcomes,
//! and `m.room.encrypted` messages (§9.4).

// Each test crate uses part of it.
#![allow(dead_code)]

use lmx::core::crypto::{b64_decode, b64_encode, sha256, signing_bytes};
use lmx::core::json::Canonical;
use lmx::core::mls::{DeviceCredential, CIPHERSUITE, CREDENTIAL_ALGORITHM, KEY_PACKAGE_ALGORITHM, ROOM_ALGORITHM};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde_json::{json, Value};
use tls_codec::{Deserialize as _, Serialize as _};

pub struct MlsDevice {
    pub user: String,
    pub device: String,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    pub group: Option<MlsGroup>,
}

fn b64_of(m: &impl tls_codec::Serialize) -> String {
    b64_encode(&m.tls_serialize_detached().unwrap())
}

fn message_in(b64: &str) -> MlsMessageIn {
    MlsMessageIn::tls_deserialize_exact(b64_decode(b64).unwrap().as_slice()).unwrap()
}

fn config(policy: WireFormatPolicy) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder().use_ratchet_tree_extension(true).wire_format_policy(policy).build()
}

impl MlsDevice {
    pub fn new(user: &str, device: &str) -> MlsDevice {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let credential = CredentialWithKey {
            credential: DeviceCredential::new(user, device, signer.public()).to_mls(),
            signature_key: signer.public().into(),
        };
        MlsDevice { user: user.into(), device: device.into(), provider, signer, credential, group: None }
    }

    pub fn credential_key_id(&self) -> String {
        format!("{CREDENTIAL_ALGORITHM}:{}", self.device)
    }

    /// The device object, signed by the credential's key.
    pub fn device_object(&self) -> Value {
        let credential = DeviceCredential::new(&self.user, &self.device, self.signer.public());
        let key_id = self.credential_key_id();
        let object = json!({
            "device_id": self.device,
            "user_id": self.user,
            "algorithms": [ROOM_ALGORITHM],
            "keys": { &key_id: b64_encode(&credential.to_bytes()) },
        });
        self.sign(object, &key_id)
    }

    /// `object` with this device's credential signature under its user.
    pub fn sign(&self, mut object: Value, key_id: &str) -> Value {
        object.as_object_mut().unwrap().remove("signatures");
        let bytes = signing_bytes(object.as_object().unwrap(), Canonical::Matrix).unwrap();
        let sig = b64_encode(&openmls_traits::signatures::Signer::sign(&self.signer, &bytes).unwrap());
        object["signatures"] = json!({ &self.user: { key_id: sig } });
        object
    }

    /// A key package (`key id`, base64), its version from its hash.
    pub fn key_package(&self, last_resort: bool, lifetime_secs: Option<u64>) -> (String, String) {
        let mut builder = KeyPackage::builder();
        if last_resort {
            let capabilities = Capabilities::builder().extensions(vec![ExtensionType::LastResort]).build();
            builder = builder.mark_as_last_resort().leaf_node_capabilities(capabilities);
        }
        if let Some(secs) = lifetime_secs {
            builder = builder.key_package_lifetime(Lifetime::new(secs));
        }
        let bundle = builder.build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone()).unwrap();
        let bytes = bundle.key_package().tls_serialize_detached().unwrap();
        let version: String = sha256(&bytes).iter().take(8).map(|b| format!("{b:02x}")).collect();
        (format!("{KEY_PACKAGE_ALGORITHM}:{version}"), b64_encode(&bytes))
    }

    /// A commit's event content, from the commit and the group after it.
    fn commit_content(&self, commit: &MlsMessageOut, info: Option<&openmls::messages::group_info::GroupInfo>) -> Value {
        let info: MlsMessageOut = info.expect("a group info (ratchet tree extension on)").clone().into();
        json!({ "message": b64_of(commit), "public_group_state": b64_of(&info) })
    }

    /// Creates the room's group and its first commit (left pending).
    pub fn create_group(&mut self, room: &str) -> Value {
        let create = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create,
            GroupId::from_slice(room.as_bytes()),
            self.credential.clone(),
        )
        .unwrap();
        self.group = Some(group);
        self.self_update()
    }

    /// An empty commit with a path (left pending).
    pub fn self_update(&mut self) -> Value {
        let (provider, signer) = (&self.provider, &self.signer);
        let bundle = self.group.as_mut().unwrap().self_update(provider, signer, LeafNodeParameters::default()).unwrap();
        self.commit_content(bundle.commit(), bundle.group_info())
    }

    /// A commit adding the devices of `packages` (left pending), and the
    /// Welcome for them.
    pub fn add(&mut self, packages: &[String]) -> (Value, String) {
        let packages: Vec<KeyPackage> = packages
            .iter()
            .map(|p| {
                let p = KeyPackageIn::tls_deserialize_exact(b64_decode(p).unwrap().as_slice()).unwrap();
                p.validate(self.provider.crypto(), ProtocolVersion::Mls10).unwrap()
            })
            .collect();
        let (provider, signer) = (&self.provider, &self.signer);
        let (commit, welcome, info) = self.group.as_mut().unwrap().add_members(provider, signer, &packages).unwrap();
        (self.commit_content(&commit, info.as_ref()), b64_of(&welcome))
    }

    /// A commit removing the members at `leaves` (left pending).
    pub fn remove(&mut self, leaves: &[u32]) -> Value {
        let leaves: Vec<LeafNodeIndex> = leaves.iter().map(|l| LeafNodeIndex::new(*l)).collect();
        let (provider, signer) = (&self.provider, &self.signer);
        let (commit, _, info) = self.group.as_mut().unwrap().remove_members(provider, signer, &leaves).unwrap();
        self.commit_content(&commit, info.as_ref())
    }

    /// A proposal to add the device of `package`, as a member sends it
    /// apart (the draft forbids it; this is how another member's commit
    /// comes to carry it).
    pub fn propose_add(&mut self, package: &str) -> String {
        let package = KeyPackageIn::tls_deserialize_exact(b64_decode(package).unwrap().as_slice()).unwrap();
        let package = package.validate(self.provider.crypto(), ProtocolVersion::Mls10).unwrap();
        let (provider, signer) = (&self.provider, &self.signer);
        let (proposal, _) = self.group.as_mut().unwrap().propose_add_member(provider, signer, &package).unwrap();
        b64_of(&proposal)
    }

    /// Drops the proposals this device made or took (none was committed).
    pub fn forget_proposals(&mut self) {
        let storage = self.provider.storage();
        self.group.as_mut().unwrap().clear_pending_proposals(storage).unwrap();
    }

    /// Takes another member's proposal into the pending ones.
    pub fn take_proposal(&mut self, proposal: &str) {
        let message = message_in(proposal).try_into_protocol_message().unwrap();
        let provider = &self.provider;
        let group = self.group.as_mut().unwrap();
        let processed = group.process_message(provider, message).unwrap();
        let ProcessedMessageContent::ProposalMessage(p) = processed.into_content() else { panic!("not a proposal") };
        group.store_pending_proposal(provider.storage(), *p).unwrap();
    }

    /// A commit of the pending proposals (left pending).
    pub fn commit_pending(&mut self) -> Value {
        let (provider, signer) = (&self.provider, &self.signer);
        let (commit, _, info) = self.group.as_mut().unwrap().commit_to_pending_proposals(provider, signer).unwrap();
        self.commit_content(&commit, info.as_ref())
    }

    /// From now on, handshake messages go out encrypted (`PrivateMessage`).
    pub fn encrypt_handshakes(&mut self) {
        let storage = self.provider.storage();
        self.group.as_mut().unwrap().set_configuration(storage, &config(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)).unwrap();
    }

    /// Handshake messages go out as `PublicMessage` again.
    pub fn plain_handshakes(&mut self) {
        let storage = self.provider.storage();
        self.group.as_mut().unwrap().set_configuration(storage, &config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)).unwrap();
    }

    /// The hub took our pending commit.
    pub fn accepted(&mut self) {
        let provider = &self.provider;
        self.group.as_mut().unwrap().merge_pending_commit(provider).unwrap();
    }

    /// The hub refused our pending commit: it and the proposals it was
    /// made of are forgotten (a later commit would carry them by reference).
    pub fn refused(&mut self) {
        let storage = self.provider.storage();
        let group = self.group.as_mut().unwrap();
        group.clear_pending_commit(storage).unwrap();
        group.clear_pending_proposals(storage).unwrap();
    }

    /// Joins a group from a Welcome.
    pub fn join(&mut self, welcome: &str) {
        let MlsMessageBodyIn::Welcome(welcome) = message_in(welcome).extract() else { panic!("not a Welcome") };
        let staged =
            StagedWelcome::new_from_welcome(&self.provider, &config(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY), welcome, None)
                .unwrap();
        self.group = Some(staged.into_group(&self.provider).unwrap());
    }

    /// Follows another member's commit (from its event content).
    pub fn process_commit(&mut self, content: &Value) {
        let message = message_in(content["message"].as_str().unwrap()).try_into_protocol_message().unwrap();
        let provider = &self.provider;
        let group = self.group.as_mut().unwrap();
        let processed = group.process_message(provider, message).unwrap();
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            panic!("not a commit")
        };
        group.merge_staged_commit(provider, *staged).unwrap();
    }

    /// An `m.room.encrypted` content for `text` in the current epoch.
    pub fn encrypt(&mut self, text: &str, commit_event_id: &str) -> Value {
        let (provider, signer) = (&self.provider, &self.signer);
        let message = self.group.as_mut().unwrap().create_message(provider, signer, text.as_bytes()).unwrap();
        json!({ "algorithm": ROOM_ALGORITHM, "ciphertext": b64_of(&message), "commit_event_id": commit_event_id })
    }

    /// The text of an `m.room.encrypted` content.
    pub fn decrypt(&mut self, content: &Value) -> String {
        let message = message_in(content["ciphertext"].as_str().unwrap()).try_into_protocol_message().unwrap();
        let provider = &self.provider;
        let processed = self.group.as_mut().unwrap().process_message(provider, message).unwrap();
        let ProcessedMessageContent::ApplicationMessage(m) = processed.into_content() else { panic!("not a message") };
        String::from_utf8(m.into_bytes()).unwrap()
    }

    /// The leaf of `user`'s `device` in our copy of the group.
    pub fn leaf_of(&self, user: &str, device: &str) -> Option<u32> {
        self.group.as_ref()?.members().find_map(|m| {
            let d = DeviceCredential::of_leaf(&m.credential, &m.signature_key).ok()?;
            (d.user == user && d.device == device).then_some(m.index.u32())
        })
    }

    pub fn epoch(&self) -> u64 {
        self.group.as_ref().map_or(0, |g| g.epoch().as_u64())
    }
}

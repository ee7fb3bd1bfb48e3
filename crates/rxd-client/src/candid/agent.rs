//! Candid's agent login, for scripts and services: the agent file (a curve25519 key and the
//! user it logs in as at each Candid), and the token it earns: the login macaroon Candid hands
//! the agent, with its local caveat discharged by the agent's own key, in libmacaroons' V2
//! binary form (what go-macaroon-bakery's `Slice.MarshalBinary` writes).

use super::CandidError;
use rxd_bakery::b64;
use rxd_bakery::client::{is_local, local_discharge, pending};
use rxd_bakery::codec::KeyPair;
use rxd_bakery::wire::{BakeryMacaroon, DischargeToken};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// An agent identity, as Candid's agent file describes it:
/// `{"key":{"public":"<b64>","private":"<b64>"},"agents":[{"url":"<candid>","username":"<user>"}]}`.
#[derive(Debug, Clone)]
pub struct Agent {
    pub path: PathBuf,
    pub key: KeyPair,
    pub agents: Vec<AgentEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentEntry {
    pub url: String,
    pub username: String,
}

#[derive(Deserialize)]
struct AgentFile {
    key: KeyFile,
    #[serde(default)]
    agents: Vec<AgentEntry>,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(default)]
    public: String,
    private: String,
}

impl Agent {
    pub fn load(path: &Path) -> Result<Agent, CandidError> {
        let err = |reason: String| CandidError::AgentFile {
            path: path.into(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Agent::parse(&text, path).map_err(err)
    }

    fn parse(text: &str, path: &Path) -> Result<Agent, String> {
        let f: AgentFile =
            serde_json::from_str(text).map_err(|e| format!("not an agent file: {e}"))?;
        let secret: [u8; 32] = b64::decode(&f.key.private)
            .and_then(|b| b.try_into().ok())
            .ok_or("key.private is not a base64 32-byte key")?;
        let key = KeyPair::from_secret(secret);
        if !f.key.public.is_empty()
            && rxd_bakery::codec::parse_public_key(&f.key.public) != Some(key.public())
        {
            return Err("key.public does not belong to key.private".into());
        }
        if f.agents.is_empty() {
            return Err("no agents listed".into());
        }
        Ok(Agent {
            path: path.into(),
            key,
            agents: f.agents,
        })
    }

    /// The user this agent logs in as at the Candid at `location` (trailing slashes ignored).
    pub fn username_for(&self, location: &str) -> Option<&str> {
        let want = location.trim_end_matches('/');
        self.agents
            .iter()
            .find(|a| a.url.trim_end_matches('/') == want)
            .map(|a| a.username.as_str())
    }

    pub fn public_key_text(&self) -> String {
        b64::std(&self.key.public())
    }

    /// The token for Candid's agent login macaroon: the macaroon followed by the discharges of
    /// its local caveats, bound to it, as V2 binary.
    pub fn token(&self, login: &BakeryMacaroon) -> Result<DischargeToken, CandidError> {
        let primary = &login.macaroon;
        let mut slice = Vec::new();
        slice.extend(primary.to_binary());
        let caveats = pending(login);
        if caveats.is_empty() {
            return Err(CandidError::Interaction {
                location: primary.location.clone(),
                reason: "the agent login macaroon has no caveat for the agent's key".into(),
            });
        }
        for p in caveats {
            if !is_local(&p.location) {
                return Err(CandidError::Interaction {
                    location: primary.location.clone(),
                    reason: format!(
                        "the agent login macaroon needs a discharge from {:?}, which an agent cannot get",
                        p.location
                    ),
                });
            }
            let d = local_discharge(&p, &self.key)?;
            slice.extend(d.bound_to(primary).to_binary());
        }
        Ok(DischargeToken {
            kind: "agent".into(),
            value: b64::url(&slice),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rxd_bakery::codec;
    use rxd_bakery::macaroon::Macaroon;
    use std::collections::BTreeMap;

    fn agent_file(key: &KeyPair, public: &str) -> String {
        serde_json::json!({
            "key": {"public": public, "private": b64::std(&key.secret_bytes())},
            "agents": [{"url": "http://127.0.0.1:9/", "username": "bot"}]
        })
        .to_string()
    }

    #[test]
    fn agent_files() {
        let key = KeyPair::generate();
        let a = Agent::parse(&agent_file(&key, &b64::std(&key.public())), Path::new("a")).unwrap();
        assert_eq!(a.username_for("http://127.0.0.1:9"), Some("bot"));
        assert_eq!(a.username_for("http://127.0.0.1:9//"), Some("bot"));
        assert_eq!(a.username_for("http://127.0.0.1:10"), None);
        assert!(Agent::parse(&agent_file(&key, ""), Path::new("a")).is_ok());
        let other = KeyPair::generate();
        let e = Agent::parse(
            &agent_file(&key, &b64::std(&other.public())),
            Path::new("a"),
        )
        .unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        assert!(Agent::parse("{}", Path::new("a")).is_err());
        assert!(Agent::parse(r#"{"key":{"private":"AAAA"},"agents":[]}"#, Path::new("a")).is_err());
    }

    /// A decoded binary macaroon: its sections of (field type, data), and its signature.
    type Decoded = (Vec<Vec<(u8, Vec<u8>)>>, Vec<u8>);

    /// Splits V2 binary macaroons back to back, the way the test discharger (and Go) read them:
    /// header section, caveat sections, an empty section, then the signature field.
    fn split(mut data: &[u8]) -> Vec<Decoded> {
        let mut out = Vec::new();
        while !data.is_empty() {
            assert_eq!(data[0], 2);
            let mut pos = 1;
            let mut sections = Vec::new();
            loop {
                let mut fields = Vec::new();
                loop {
                    let t = data[pos];
                    pos += 1;
                    if t == 0 {
                        break;
                    }
                    let (n, rest) = codec::take_uvarint(&data[pos..]).unwrap();
                    pos = data.len() - rest.len();
                    fields.push((t, data[pos..pos + n as usize].to_vec()));
                    pos += n as usize;
                }
                let empty = fields.is_empty();
                if empty && !sections.is_empty() {
                    break;
                }
                sections.push(fields);
            }
            assert_eq!(data[pos], 6);
            let (n, rest) = codec::take_uvarint(&data[pos + 1..]).unwrap();
            let sig = rest[..n as usize].to_vec();
            data = &rest[n as usize..];
            out.push((sections, sig));
        }
        out
    }

    #[test]
    fn the_agent_token_is_the_bound_slice_in_binary() {
        let (agent_key, candid) = (KeyPair::generate(), KeyPair::generate());
        let mut m = Macaroon::new(b"root", b"login-id".to_vec(), "http://candid");
        m.add_first_party("declared username bot");
        let caveat_root = [5u8; 24];
        let cid = vec![3, 0];
        let location = format!("local 3 {}", b64::std(&agent_key.public()));
        m.add_third_party(&caveat_root, cid.clone(), &location);
        let payload = codec::encode("true", &caveat_root, "std:", &agent_key.public(), &candid);
        let bm = BakeryMacaroon {
            macaroon: m.clone(),
            version: 3,
            namespace: "std:".into(),
            caveat_data: BTreeMap::from([(cid.clone(), payload)]),
        };
        let agent = Agent {
            path: "a".into(),
            key: agent_key.clone(),
            agents: vec![],
        };
        let tok = agent.token(&bm).unwrap();
        assert_eq!(tok.kind, "agent");
        let parts = split(&b64::decode(&tok.value).unwrap());
        assert_eq!(parts.len(), 2);
        let (sections, sig) = &parts[0];
        assert_eq!(sig, &m.signature.to_vec());
        assert_eq!(
            sections[0],
            vec![(1, b"http://candid".to_vec()), (2, b"login-id".to_vec())]
        );
        assert_eq!(sections[1], vec![(2, b"declared username bot".to_vec())]);
        assert_eq!(sections[2][0], (1, location.into_bytes()));
        assert_eq!(sections[2][1], (2, cid.clone()));
        assert_eq!(sections[2][2].0, 4);
        // The discharge: the caveat id, no location, signed from the caveat root key, bound.
        let (dsections, dsig) = &parts[1];
        assert_eq!(dsections[0], vec![(2, cid.clone())]);
        let d = Macaroon::new(&caveat_root, cid, "");
        assert_eq!(dsig, &d.bound_to(&m).signature.to_vec());
        // And the whole slice verifies as the login it is.
        let mut seen = Vec::new();
        m.verify(b"root", &[d.bound_to(&m)], &mut |c| {
            seen.push(c.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["declared username bot"]);

        // A key the caveat is not addressed to cannot discharge it.
        let stranger = Agent {
            key: KeyPair::generate(),
            ..agent
        };
        assert!(stranger.token(&bm).is_err());
    }
}

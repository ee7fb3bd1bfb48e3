//! Macaroons (libmacaroons' V2 format) and the bakery v3 layer on top of them, as LXD 5.0,
//! go-macaroon-bakery and Candid speak it: minting a login macaroon with a third-party caveat
//! encrypted to the authentication server, verifying what comes back, binding discharges, and
//! the wire shapes of the challenge and the discharge exchange. No IO: callers supply keys and
//! time; randomness comes from the OS.
//!
//! Written by hand because no maintained crate implements the bakery layer (caveat codec v3,
//! wrapper JSON, checkers); the primitives are RustCrypto's (`hmac`, `crypto_box`,
//! `crypto_secretbox`).
#![forbid(unsafe_code)]

pub mod b64;
pub mod checkers;
pub mod client;
pub mod codec;
pub mod cookie;
pub mod id;
pub mod login;
pub mod macaroon;
pub mod wire;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BakeryError {
    #[error("malformed macaroon: {0}")]
    Malformed(&'static str),
    #[error("malformed third-party caveat: {0}")]
    BadCaveat(&'static str),
    #[error("cannot decrypt third-party caveat")]
    Decrypt,
    #[error("signature mismatch")]
    Signature,
    #[error("no discharge for a third-party caveat")]
    MissingDischarge,
    #[error("discharge macaroon not used")]
    UnusedDischarge,
    #[error("unknown root key")]
    UnknownRootKey,
    #[error("caveat not satisfied: {0}")]
    Caveat(String),
}

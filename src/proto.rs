//! The CSI v1 messages and services generated from `proto/csi.proto`.
#![allow(missing_docs, clippy::pedantic, clippy::all)]

tonic::include_proto!("csi.v1");

//! The gRPC API generated from `proto/edge/v1/edge.proto` (the contract; see docs/api.md).
#![allow(clippy::all)]
tonic::include_proto!("edge.v1");

/// The encoded descriptor set, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("edge_descriptor");

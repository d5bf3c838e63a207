type      = "host"
name      = "valkey_data"
node_id   = ""
host_path = "/tmp/deploy-remote-WU8VC9/valkey_data"

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

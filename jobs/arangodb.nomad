# ArangoDB for Agent Economique: one Docker container, its data on the client's host volume
# "arangodb_data" (the directory is created by deploy/deploy_arango_volume.mts; the client config block
# that declares it is printed by that script and by deploy/deploy_arangodb.mts, never applied by one).
#
# The root password is NOT in this file and never a -var: the template below reads it from the Nomad
# Variable nomad/jobs/arangodb-agent-economique (item root_password, written by
# deploy/put_arangodb_password.mts) into a secrets/ env file. A task may read the variables under
# nomad/jobs/<its job> without any ACL policy. nomadVar blocks until the variable exists, so store it first.
# ArangoDB uses ARANGO_ROOT_PASSWORD only when it initialises an empty data directory.

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "arangodb-agent-economique" {
  datacenters = var.datacenters
  type        = "service"

  group "arangodb" {
    count = 1

    volume "arangodb_data" {
      type      = "host"
      source    = "arangodb_data"
      read_only = false
    }

    network {
      # Static, so that the agent (raw_exec on the host) finds it at <client>:8529.
      port "http" {
        static = 8529
        to     = 8529
      }
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "5m"
      progress_deadline = "10m"
      auto_revert       = true
    }

    service {
      name = "arangodb-agent-economique"
      port = "http"
      tags = ["arangodb", "agent-economique"]

      # TCP, not http: with authentication on, /_api/version answers 401 to an anonymous check.
      check {
        name     = "arangodb-tcp"
        type     = "tcp"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "arangodb" {
      driver = "docker"

      config {
        # Pinned: a new ArangoDB version is a deliberate change of this line, never a moving tag.
        image = "arangodb/arangodb:3.11.14"
        ports = ["http"]
      }

      volume_mount {
        volume      = "arangodb_data"
        destination = "/var/lib/arangodb3"
        read_only   = false
      }

      template {
        destination = "secrets/arangodb.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/arangodb-agent-economique" }}ARANGO_ROOT_PASSWORD={{ .root_password | toJSON }}{{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 2048
      }

      kill_timeout = "30s"
    }
  }
}

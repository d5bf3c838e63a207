# Agent Economique: the Go agent, compiled and uploaded by deploy/deploy_binary.mts, run by raw_exec.
# The binary path is passed by deploy/deploy_nomad.mts from AGENT_REMOTE_DIR and AGENT_BINARY_NAME,
# the same settings deploy_binary uploads to, so the two cannot drift.
# raw_exec must be enabled on the client (printed by deploy_nomad, never applied by a script), and it
# cannot mount host volumes: the agent keeps its files under its own directory.
# The job runs only on the clients that hold the binary: deploy_nomad passes their node IDs (those of
# DEPLOY_SSH_HOST / DEPLOY_SSH_HOSTS, matched as deploy_binary matches them) as -var nodes.

variable "binary_path" {
  type        = string
  description = "Absolute path of the agent binary on the client (AGENT_REMOTE_DIR/AGENT_BINARY_NAME)"
}

variable "nodes" {
  type        = string
  description = "The IDs of the Nomad clients that hold the binary, comma-separated (set_contains_any)"
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "agent-economique" {
  datacenters = var.datacenters
  type        = "service"

  group "agent" {
    count = 1

    # Only where deploy_binary put the binary (scheduler/feasible.go@v1.6.10 and
    # scheduler/feasible/feasible.go@v2.0.5 checkSetContainsAny: the node's ID is one of the list).
    constraint {
      attribute = "${node.unique.id}"
      operator  = "set_contains_any"
      value     = var.nodes
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    update {
      max_parallel     = 1
      min_healthy_time = "10s"
      healthy_deadline = "3m"
      progress_deadline = "10m"
      health_check     = "task_states"
      auto_revert      = true
    }

    task "agent" {
      driver = "raw_exec"

      config {
        command = var.binary_path
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}

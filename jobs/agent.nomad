# Agent Economique: the Go agent, compiled and uploaded by deploy/deploy_binary.mts, run by raw_exec.
# Each build is a file of its own, named by its content: AGENT_REMOTE_DIR/AGENT_BINARY_NAME-<sha256>.
# deploy/deploy_nomad.mts passes that exact path and its sha256 (and the source commit) as variables,
# so a new binary is a new job version: Nomad rolls it out with its health gate and auto_revert, and
# reverting a version brings its binary back (its file is still on the client).
# raw_exec must be enabled on the client (printed by deploy_nomad, never applied by a script), and it
# cannot mount host volumes: the agent keeps its files under its own directory.
# The job runs only on the clients that hold the binary: deploy_nomad passes their node IDs (those of
# DEPLOY_SSH_HOST / DEPLOY_SSH_HOSTS, matched as deploy_binary matches them) as -var nodes.

variable "binary_path" {
  type        = string
  description = "Absolute path of the agent binary on the client (AGENT_REMOTE_DIR/AGENT_BINARY_NAME)"
}

variable "binary_sha256" {
  type        = string
  default     = ""
  description = "The sha256 of that binary (its file name says it too), kept in the job's meta"
}

variable "commit" {
  type        = string
  default     = ""
  description = "The source commit the binary was built from (unknown: empty)"
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

  # What this version runs: read by deploy_nomad (to re-apply it), revert_agent and status.
  meta {
    binary_sha256 = var.binary_sha256
    commit        = var.commit
  }

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

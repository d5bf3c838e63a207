# Agent Economique: the Go agent, compiled and uploaded by deploy/deploy_binary.mts, run by raw_exec.
# The binary path is passed by deploy/deploy_nomad.mts from AGENT_REMOTE_DIR and AGENT_BINARY_NAME,
# the same settings deploy_binary uploads to, so the two cannot drift.
# raw_exec must be enabled on the client (printed by deploy_nomad, never applied by a script), and it
# cannot mount host volumes: the agent keeps its files under its own directory.

variable "binary_path" {
  type        = string
  description = "Absolute path of the agent binary on the client (AGENT_REMOTE_DIR/AGENT_BINARY_NAME)"
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

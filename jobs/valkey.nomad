# CEDRA storefront: Valkey 8.0, the ISR cache that every storefront instance shares.
# Deployed by deploy/deploy_valkey.mts. Before the first deploy:
#   - the data directory and the client's host_volume "valkey_data" block: deploy/deploy_valkey_volume.mts
#     (it prints the block to add by hand; no script changes the Nomad configuration);
#   - valkey_password in Vault KV v2 (secret/cedra/prod): deploy/put_storefront_secrets.mts.
# The password is rendered from Vault into each task's secrets/ directory (private to the task, never
# written to the job, its args or a -var): a config file for Valkey, an env file for the exporter.
# The Vault path is the vault_secret variable: deploy_valkey passes it from STOREFRONT_VAULT_PATH, the
# same setting put_storefront_secrets writes to, so the two cannot drift.

variable "vault_secret" {
  type        = string
  description = "KV v2 API path of the storefront secrets (STOREFRONT_VAULT_PATH with /data/ after the mount)"
  default     = "secret/data/cedra/prod"
}

variable "vault_auth" {
  type        = string
  description = "How the tasks log in to Vault: identity (workload identity and vault_role: Nomad 1.7+, the only way on 1.10+) or token (legacy policies: Nomad 1.6-1.9)."
  default     = "identity"

  validation {
    condition     = contains(["identity", "token"], var.vault_auth)
    error_message = "The vault_auth must be identity or token."
  }
}

variable "vault_role" {
  type        = string
  description = "Vault JWT auth role for the workload identity (STOREFRONT_VAULT_ROLE); it must allow read on vault_secret."
  default     = "cedra-storefront"
}

variable "vault_policies" {
  type        = list(string)
  description = "Vault policies of the legacy token flow (Nomad 1.6-1.9); they must allow read on vault_secret."
  default     = ["cedra-storefront"]
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "valkey" {
  datacenters = var.datacenters
  type        = "service"

  group "valkey" {
    # One instance: the append-only files live on one client's host volume.
    count = 1

    network {
      port "valkey" {
        to = 6379
      }
      port "metrics" {
        to = 9121
      }
    }

    volume "valkey_data" {
      type      = "host"
      source    = "valkey_data"
      read_only = false
    }

    # Vault for both tasks, one of two ways (deploy_valkey chooses from the cluster's version, as
    # deploy_storefront does; exactly one block reaches Nomad):
    # - "identity" (Nomad 1.7+ with workload identity; the only way on 1.10+): JWT auth role var.vault_role;
    # - "token" (Nomad 1.6-1.9 legacy flow): a Vault token with var.vault_policies. A 1.6 CLI does not
    #   know `role` (api/tasks.go@v1.6.10): a dynamic block with no instance is never decoded.
    dynamic "vault" {
      for_each = var.vault_auth == "identity" ? [var.vault_role] : []
      content {
        role        = vault.value
        change_mode = "restart"
      }
    }
    dynamic "vault" {
      for_each = var.vault_auth == "token" ? [var.vault_policies] : []
      content {
        policies    = vault.value
        change_mode = "restart"
      }
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    # The old allocation stops before the new one starts: two servers never share the AOF files.
    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "3m"
      progress_deadline = "10m"
      auto_revert       = true
    }

    task "valkey" {
      driver = "docker"

      config {
        image = "valkey/valkey:8.0.2"
        ports = ["valkey"]
        # The image's entrypoint chowns /data and drops to the valkey user (uid 999).
        command = "valkey-server"
        args    = ["/secrets/valkey.conf"]
      }

      volume_mount {
        volume      = "valkey_data"
        destination = "/data"
        read_only   = false
      }

      # Rendered into secrets/ (only this task sees it), readable by the valkey user alone.
      template {
        destination = "secrets/valkey.conf"
        uid         = 999
        gid         = 999
        perms       = "0400"
        change_mode = "restart"
        data        = <<-EOT
          bind 0.0.0.0
          port 6379
          dir /data
          appendonly yes
          appendfsync everysec
          # A cache: when full, evict the least recently used keys rather than refuse writes.
          maxmemory 400mb
          maxmemory-policy allkeys-lru
          {{ with secret "${var.vault_secret}" }}requirepass "{{ .Data.data.valkey_password }}"{{ end }}
        EOT
      }

      service {
        name     = "valkey"
        port     = "valkey"
        provider = "consul"
        tags     = ["cedra", "isr-cache"]

        check {
          name     = "valkey tcp"
          type     = "tcp"
          port     = "valkey"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }

    # Prometheus exporter for Valkey, beside it in the same group, with its own port and service.
    task "exporter" {
      driver = "docker"

      lifecycle {
        hook    = "poststart"
        sidecar = true
      }

      config {
        image = "oliver006/redis_exporter:v1.67.0"
        ports = ["metrics"]
      }

      env {
        REDIS_ADDR = "redis://${NOMAD_ADDR_valkey}"
      }

      template {
        destination = "secrets/exporter.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with secret "${var.vault_secret}" }}REDIS_PASSWORD={{ .Data.data.valkey_password | toJSON }}{{ end }}
        EOT
      }

      service {
        name     = "valkey-metrics"
        port     = "metrics"
        provider = "consul"
        tags     = ["prometheus", "cedra"]

        meta {
          metrics_path = "/metrics"
        }

        check {
          name     = "exporter health"
          type     = "http"
          path     = "/health"
          interval = "15s"
          timeout  = "3s"
        }
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}

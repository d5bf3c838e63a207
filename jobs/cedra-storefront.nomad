# CEDRA storefront: the Next.js app (its Dockerfile builds with Bun), several instances sharing one
# Valkey as their ISR cache, served under /fr, /nl and /en by HAProxy (example: jobs/haproxy.cfg).
#
# Deployed by deploy/deploy_storefront.mts, which builds the image, tags it with the git commit and
# passes that tag as -var image_tag (never "latest": Nomad would see no change). Rolled out by canary:
# one new instance first, healthy once /api/health has passed for 60 s, then promoted by hand
# (deploy/promote_storefront.mts, or `nomad job promote cedra-storefront`) or automatically with
# -var auto_promote=true. A failed deployment reverts by itself (auto_revert); a manual rollback is
# deploy/revert_storefront.mts <version>.
#
# Secrets come from Vault (secret/cedra/prod, written by deploy/put_storefront_secrets.mts) through a
# template: they are never in this file nor a -var. The Vault path is the vault_secret variable, which
# deploy_storefront passes from STOREFRONT_VAULT_PATH, the setting put_storefront_secrets writes to.
# Valkey (jobs/valkey.nomad) is found through Consul.
# Needs Nomad 1.6+ (2.0 is the current line) with Consul and Vault integrations, and the Docker driver on the clients.

variable "vault_secret" {
  type        = string
  description = "KV v2 API path of the storefront secrets (STOREFRONT_VAULT_PATH with /data/ after the mount)"
  default     = "secret/data/cedra/prod"
}

variable "vault_auth" {
  type        = string
  description = "How the task logs in to Vault: identity (workload identity and vault_role: Nomad 1.7+, the only way on 1.10+) or token (legacy policies: Nomad 1.6-1.9)."
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

variable "image" {
  type        = string
  description = "Image repository without a tag (STOREFRONT_IMAGE)."
  default     = "registry.example.internal/cedra/storefront"
}

variable "image_tag" {
  type        = string
  description = "Image tag: the git commit of the storefront, always given by deploy_storefront."

  validation {
    condition     = var.image_tag != "" && var.image_tag != "latest"
    error_message = "The image_tag must be a commit tag, never empty nor latest."
  }
}

variable "count" {
  type        = number
  description = "Number of storefront instances (STOREFRONT_COUNT); at least 2 so that a canary never leaves the site on one instance."
  default     = 2

  validation {
    condition     = var.count >= 2
    error_message = "The count must be at least 2."
  }
}

variable "auto_promote" {
  type        = bool
  description = "Promote the canary by itself once healthy (false: wait for promote_storefront)."
  default     = false
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

job "cedra-storefront" {
  datacenters = var.datacenters
  type        = "service"

  update {
    # One canary next to the running instances; it is healthy once its checks have passed for
    # min_healthy_time, must be so within healthy_deadline, and the whole deployment must progress
    # within progress_deadline (greater than healthy_deadline), else it fails and reverts.
    canary            = 1
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "60s"
    healthy_deadline  = "5m"
    progress_deadline = "10m"
    auto_revert       = true
    auto_promote      = var.auto_promote
  }

  group "storefront" {
    count = var.count

    network {
      port "http" {
        to = 3000
      }
    }

    # The Valkey template below reads Consul. Since Nomad 1.10 a task gets a Consul identity for its
    # templates only when its group or task has a consul block (#25298,
    # nomad/job_endpoint_hook_implicit_identities.go@v1.10.0); without one, with Consul ACLs on, the
    # template renders nothing. The group-level block is the one a 1.6 CLI parses too (api/tasks.go@v1.6.10).
    consul {}

    # The tags are what HAProxy selects instances by (jobs/haproxy.cfg): "haproxy" for the shared
    # paths (/, /_next, /api), one per language path. Every instance serves every language today.
    # The canary carries the same tags (so it takes its share of traffic) plus "canary", to find
    # it: dig @127.0.0.1 -p 8600 canary.cedra-storefront.service.consul SRV
    service {
      name        = "cedra-storefront"
      port        = "http"
      tags        = ["haproxy", "lang-fr", "lang-nl", "lang-en"]
      canary_tags = ["haproxy", "lang-fr", "lang-nl", "lang-en", "canary"]

      check {
        name     = "api-health"
        type     = "http"
        path     = "/api/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    task "storefront" {
      driver = "docker"

      config {
        image = "${var.image}:${var.image_tag}"
        ports = ["http"]
      }

      env {
        NODE_ENV = "production"
        HOSTNAME = "0.0.0.0"
        PORT     = "3000"
      }

      # Vault, one of two ways (deploy_storefront chooses from the cluster's version: DEPLOYMENT_GUIDE.md,
      # "Supported versions"); exactly one of these blocks exists in the job that Nomad receives:
      # - "identity" (Nomad 1.7+ with workload identity; the only way on 1.10+): the task logs in to
      #   Vault with its workload identity and the JWT auth role var.vault_role, which must allow read
      #   on var.vault_secret. 1.10+ silently drops `policies`, so they are never sent there.
      # - "token" (Nomad 1.6-1.9 legacy flow): a Vault token with var.vault_policies. A 1.6 CLI does
      #   not know `role` (api/tasks.go@v1.6.10): a dynamic block with no instance is never decoded.
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

      # The secrets, from Vault KV v2 (note /data/ in the path and .Data.data), into the environment.
      template {
        destination = "secrets/storefront.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with secret "${var.vault_secret}" }}
          REVALIDATE_SECRET={{ .Data.data.revalidate_secret | toJSON }}
          SESSION_SECRET={{ .Data.data.session_secret | toJSON }}
          VALKEY_PASSWORD={{ .Data.data.valkey_password | toJSON }}
          {{ end }}
        EOT
      }

      # The Valkey address, found through Consul (one Valkey instance: the job valkey).
      template {
        destination = "local/valkey.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ range service "valkey" }}
          VALKEY_HOST={{ .Address }}
          VALKEY_PORT={{ .Port }}
          {{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}

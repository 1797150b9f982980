# A whole cloudprof deployment on Google Cloud: bucket, aggregator functions and the accounts of one service.

provider "google" {
  project = var.project_id
  region  = var.region
}

locals {
  function_package = coalesce(var.function_package, "${path.module}/../../../dist/cloudprof-aggregator-gcf.zip")
}

module "cloudprof" {
  source = "../../gcp"

  project_id       = var.project_id
  region           = var.region
  services         = [var.service]
  reader_members   = var.reader_members
  function_package = local.function_package
  labels           = { project = "cloudprof" }
}

# A whole cloudprof deployment on AWS: bucket, aggregator and the policies of one service.

provider "aws" {
  region = var.region
}

locals {
  lambda_package = coalesce(var.lambda_package, "${path.module}/../../../dist/cloudprof-aggregator-lambda.zip")
}

module "cloudprof" {
  source = "../../aws"

  name           = "cloudprof"
  services       = [var.service]
  lambda_package = local.lambda_package
  tags           = { project = "cloudprof" }
}

# Let the service's existing role upload its profiles, and nothing else.
resource "aws_iam_role_policy_attachment" "agent" {
  count = var.service_role_name == null ? 0 : 1

  role       = var.service_role_name
  policy_arn = module.cloudprof.agent_policy_arns[var.service]
}

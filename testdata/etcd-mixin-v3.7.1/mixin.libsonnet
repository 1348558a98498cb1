(import './config.libsonnet') +
(import './dashboards/dashboards.libsonnet') +
(import './alerts/alerts.libsonnet')

package server

import (
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// allGRPCServices is the service name etcd reports its health under: ""
// stands for every service of the server (gRPC's health-checking
// protocol).
const allGRPCServices = ""

// setServing sets the gRPC health service's status for every service and
// logs the change as etcd's healthNotifier does ("grpc service status
// changed").
func (s *Server) setServing(serving bool, reason string) {
	status := healthpb.HealthCheckResponse_SERVING
	if !serving {
		status = healthpb.HealthCheckResponse_NOT_SERVING
		s.log.Warn("grpc service status changed", "service", allGRPCServices, "status", status.String(), "reason", reason)
	} else {
		s.log.Info("grpc service status changed", "service", allGRPCServices, "status", status.String())
	}
	s.health.SetServingStatus(allGRPCServices, status)
}

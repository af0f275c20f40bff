package grpcserver

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// reflectionServer serves grpc.reflection.v1 (and v1alpha, which is
// wire-identical) from the global protobuf registries, the way grpc-go's
// reflection package does, but without google.golang.org/protobuf's
// reflect/protodesc: that package's init unmarshals the descriptor of
// descriptor.proto, and what it builds stays live for the life of the
// process, reflection on or off: pointer-rich heap that every GC cycle
// marks (kubeskel's live heap under load was 1,083 KB with it, 897 KB
// without: BENCHMARKS.md). Instead of rebuilding a
// FileDescriptorProto from the registry, it serves the serialized one that
// protoc-gen-go embedded in the generated code, reached through the
// deprecated Descriptor methods of the file's generated messages or enums.
//
// The difference a client can see: a .proto file that declares no message
// and no enum (only services or extensions) has no generated type to reach
// its descriptor through, so it is answered NOT_FOUND with a message naming
// the file; move one message into it, or leave Options.Reflection off and
// register grpc-go's reflection package from Options.Register (whose
// registrar is the *grpc.Server), which links protodesc back in.
type reflectionServer struct {
	rpb.UnimplementedServerReflectionServer
	services func() map[string]grpc.ServiceInfo
}

// registerReflection registers grpc.reflection.v1 and v1alpha on srv.
func registerReflection(srv *grpc.Server) {
	r := &reflectionServer{services: srv.GetServiceInfo}
	rpb.RegisterServerReflectionServer(srv, r)
	rpbalpha.RegisterServerReflectionServer(srv, alphaReflection{r})
}

// ServerReflectionInfo answers each request of the stream in order.
func (r *reflectionServer) ServerReflectionInfo(stream rpb.ServerReflection_ServerReflectionInfoServer) error {
	return r.serve(stream.Recv, stream.Send)
}

// serve answers each request recv returns, in order, until the client
// closes its side. A file descriptor goes with every dependency not yet sent
// on the same stream, as grpc-go's does; the file asked for is always sent.
func (r *reflectionServer) serve(recv func() (*rpb.ServerReflectionRequest, error), send func(*rpb.ServerReflectionResponse) error) error {
	sent := map[string]bool{}
	for {
		in, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err := r.answer(in, sent)
		if err != nil {
			return err
		}
		if err := send(out); err != nil {
			return err
		}
	}
}

func (r *reflectionServer) answer(in *rpb.ServerReflectionRequest, sent map[string]bool) (*rpb.ServerReflectionResponse, error) {
	out := &rpb.ServerReflectionResponse{ValidHost: in.GetHost(), OriginalRequest: in}
	var files [][]byte
	var err error
	switch req := in.GetMessageRequest().(type) {
	case *rpb.ServerReflectionRequest_FileByFilename:
		var fd protoreflect.FileDescriptor
		if fd, err = protoregistry.GlobalFiles.FindFileByPath(req.FileByFilename); err == nil {
			files, err = withDependencies(fd, sent)
		}
	case *rpb.ServerReflectionRequest_FileContainingSymbol:
		var d protoreflect.Descriptor
		if d, err = protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(req.FileContainingSymbol)); err == nil {
			files, err = withDependencies(d.ParentFile(), sent)
		}
	case *rpb.ServerReflectionRequest_FileContainingExtension:
		x := req.FileContainingExtension
		var xt protoreflect.ExtensionType
		xt, err = protoregistry.GlobalTypes.FindExtensionByNumber(protoreflect.FullName(x.GetContainingType()), protoreflect.FieldNumber(x.GetExtensionNumber()))
		if err == nil {
			files, err = withDependencies(xt.TypeDescriptor().ParentFile(), sent)
		}
	case *rpb.ServerReflectionRequest_AllExtensionNumbersOfType:
		name := protoreflect.FullName(req.AllExtensionNumbersOfType)
		var nums []int32
		protoregistry.GlobalTypes.RangeExtensionsByMessage(name, func(xt protoreflect.ExtensionType) bool {
			nums = append(nums, int32(xt.TypeDescriptor().Number()))
			return true
		})
		slices.Sort(nums)
		if len(nums) == 0 {
			_, err = protoregistry.GlobalFiles.FindDescriptorByName(name)
		}
		if err == nil {
			out.MessageResponse = &rpb.ServerReflectionResponse_AllExtensionNumbersResponse{
				AllExtensionNumbersResponse: &rpb.ExtensionNumberResponse{BaseTypeName: string(name), ExtensionNumber: nums},
			}
			return out, nil
		}
	case *rpb.ServerReflectionRequest_ListServices:
		var list []*rpb.ServiceResponse
		for name := range r.services() {
			list = append(list, &rpb.ServiceResponse{Name: name})
		}
		slices.SortFunc(list, func(a, b *rpb.ServiceResponse) int { return cmp.Compare(a.Name, b.Name) })
		out.MessageResponse = &rpb.ServerReflectionResponse_ListServicesResponse{
			ListServicesResponse: &rpb.ListServiceResponse{Service: list},
		}
		return out, nil
	default:
		return nil, status.Errorf(codes.InvalidArgument, "invalid MessageRequest: %v", in.GetMessageRequest())
	}
	if err != nil {
		out.MessageResponse = &rpb.ServerReflectionResponse_ErrorResponse{
			ErrorResponse: &rpb.ErrorResponse{ErrorCode: int32(codes.NotFound), ErrorMessage: err.Error()},
		}
		return out, nil
	}
	out.MessageResponse = &rpb.ServerReflectionResponse_FileDescriptorResponse{
		FileDescriptorResponse: &rpb.FileDescriptorResponse{FileDescriptorProto: files},
	}
	return out, nil
}

// withDependencies returns fd's serialized descriptor followed by those of
// its imports, transitively, that sent does not hold yet, breadth first,
// and records them in sent.
func withDependencies(fd protoreflect.FileDescriptor, sent map[string]bool) ([][]byte, error) {
	if fd.IsPlaceholder() {
		return nil, fmt.Errorf("file %q: %w", fd.Path(), protoregistry.NotFound)
	}
	var out [][]byte
	queue := []protoreflect.FileDescriptor{fd}
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		if f.IsPlaceholder() || (len(out) > 0 && sent[f.Path()]) {
			continue
		}
		b, err := rawDescriptor(f)
		if err != nil {
			return nil, err
		}
		sent[f.Path()] = true
		out = append(out, b)
		for i := range f.Imports().Len() {
			queue = append(queue, f.Imports().Get(i))
		}
	}
	return out, nil
}

// rawDescriptor returns the serialized FileDescriptorProto that
// protoc-gen-go embedded for fd, through the deprecated Descriptor method of
// the file's first generated message, or EnumDescriptor of its first enum
// (both return it gzipped).
func rawDescriptor(fd protoreflect.FileDescriptor) ([]byte, error) {
	var gz []byte
	if ms := fd.Messages(); ms.Len() > 0 {
		if mt, err := protoregistry.GlobalTypes.FindMessageByName(ms.Get(0).FullName()); err == nil {
			if d, ok := mt.Zero().Interface().(interface{ Descriptor() ([]byte, []int) }); ok {
				gz, _ = d.Descriptor()
			}
		}
	}
	if es := fd.Enums(); gz == nil && es.Len() > 0 {
		if et, err := protoregistry.GlobalTypes.FindEnumByName(es.Get(0).FullName()); err == nil {
			if d, ok := et.New(0).(interface{ EnumDescriptor() ([]byte, []int) }); ok {
				gz, _ = d.EnumDescriptor()
			}
		}
	}
	if gz == nil {
		return nil, fmt.Errorf("file %q declares no generated message or enum to read its descriptor from: %w", fd.Path(), protoregistry.NotFound)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("descriptor of %q: %w", fd.Path(), err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("descriptor of %q: %w", fd.Path(), err)
	}
	return b, nil
}

// alphaReflection serves grpc.reflection.v1alpha through the v1 server: the
// two protocols' messages are the same on the wire, so each request and
// response is converted by re-encoding it.
type alphaReflection struct{ v1 *reflectionServer }

func (a alphaReflection) ServerReflectionInfo(stream rpbalpha.ServerReflection_ServerReflectionInfoServer) error {
	recv := func() (*rpb.ServerReflectionRequest, error) {
		in, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var req rpb.ServerReflectionRequest
		if err := convert(in, &req); err != nil {
			return nil, err
		}
		return &req, nil
	}
	send := func(out *rpb.ServerReflectionResponse) error {
		var resp rpbalpha.ServerReflectionResponse //nolint:staticcheck // deprecated, but older grpcurl and grpcui still speak only v1alpha; grpc-go serves it too
		if err := convert(out, &resp); err != nil {
			return err
		}
		return stream.Send(&resp)
	}
	return a.v1.serve(recv, send)
}

// convert re-encodes from into to, two messages with the same wire format.
func convert(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err == nil {
		err = proto.Unmarshal(b, to)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "reflection: convert %T: %v", from, err)
	}
	return nil
}

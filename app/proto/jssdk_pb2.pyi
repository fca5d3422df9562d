from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Conversation(_message.Message):
    __slots__ = ("ownerUserID", "conversationID", "recvMsgOpt", "conversationType", "userID", "groupID", "isPinned", "attachedInfo", "isPrivateChat", "groupAtType", "ex", "burnDuration", "minSeq", "maxSeq", "msgDestructTime", "latestMsgDestructTime", "isMsgDestruct")
    OWNERUSERID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONID_FIELD_NUMBER: _ClassVar[int]
    RECVMSGOPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONTYPE_FIELD_NUMBER: _ClassVar[int]
    USERID_FIELD_NUMBER: _ClassVar[int]
    GROUPID_FIELD_NUMBER: _ClassVar[int]
    ISPINNED_FIELD_NUMBER: _ClassVar[int]
    ATTACHEDINFO_FIELD_NUMBER: _ClassVar[int]
    ISPRIVATECHAT_FIELD_NUMBER: _ClassVar[int]
    GROUPATTYPE_FIELD_NUMBER: _ClassVar[int]
    EX_FIELD_NUMBER: _ClassVar[int]
    BURNDURATION_FIELD_NUMBER: _ClassVar[int]
    MINSEQ_FIELD_NUMBER: _ClassVar[int]
    MAXSEQ_FIELD_NUMBER: _ClassVar[int]
    MSGDESTRUCTTIME_FIELD_NUMBER: _ClassVar[int]
    LATESTMSGDESTRUCTTIME_FIELD_NUMBER: _ClassVar[int]
    ISMSGDESTRUCT_FIELD_NUMBER: _ClassVar[int]
    ownerUserID: str
    conversationID: str
    recvMsgOpt: int
    conversationType: int
    userID: str
    groupID: str
    isPinned: bool
    attachedInfo: str
    isPrivateChat: bool
    groupAtType: int
    ex: str
    burnDuration: int
    minSeq: int
    maxSeq: int
    msgDestructTime: int
    latestMsgDestructTime: int
    isMsgDestruct: bool
    def __init__(self, ownerUserID: _Optional[str] = ..., conversationID: _Optional[str] = ..., recvMsgOpt: _Optional[int] = ..., conversationType: _Optional[int] = ..., userID: _Optional[str] = ..., groupID: _Optional[str] = ..., isPinned: _Optional[bool] = ..., attachedInfo: _Optional[str] = ..., isPrivateChat: _Optional[bool] = ..., groupAtType: _Optional[int] = ..., ex: _Optional[str] = ..., burnDuration: _Optional[int] = ..., minSeq: _Optional[int] = ..., maxSeq: _Optional[int] = ..., msgDestructTime: _Optional[int] = ..., latestMsgDestructTime: _Optional[int] = ..., isMsgDestruct: _Optional[bool] = ...) -> None: ...

class UserInfo(_message.Message):
    __slots__ = ("userID", "nickname", "faceURL", "ex", "createTime", "appMangerLevel", "globalRecvMsgOpt")
    USERID_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    FACEURL_FIELD_NUMBER: _ClassVar[int]
    EX_FIELD_NUMBER: _ClassVar[int]
    CREATETIME_FIELD_NUMBER: _ClassVar[int]
    APPMANGERLEVEL_FIELD_NUMBER: _ClassVar[int]
    GLOBALRECVMSGOPT_FIELD_NUMBER: _ClassVar[int]
    userID: str
    nickname: str
    faceURL: str
    ex: str
    createTime: int
    appMangerLevel: int
    globalRecvMsgOpt: int
    def __init__(self, userID: _Optional[str] = ..., nickname: _Optional[str] = ..., faceURL: _Optional[str] = ..., ex: _Optional[str] = ..., createTime: _Optional[int] = ..., appMangerLevel: _Optional[int] = ..., globalRecvMsgOpt: _Optional[int] = ...) -> None: ...

class FriendInfoOnly(_message.Message):
    __slots__ = ("ownerUserID", "friendUserID", "remark", "createTime", "addSource", "operatorUserID", "ex", "isPinned")
    OWNERUSERID_FIELD_NUMBER: _ClassVar[int]
    FRIENDUSERID_FIELD_NUMBER: _ClassVar[int]
    REMARK_FIELD_NUMBER: _ClassVar[int]
    CREATETIME_FIELD_NUMBER: _ClassVar[int]
    ADDSOURCE_FIELD_NUMBER: _ClassVar[int]
    OPERATORUSERID_FIELD_NUMBER: _ClassVar[int]
    EX_FIELD_NUMBER: _ClassVar[int]
    ISPINNED_FIELD_NUMBER: _ClassVar[int]
    ownerUserID: str
    friendUserID: str
    remark: str
    createTime: int
    addSource: int
    operatorUserID: str
    ex: str
    isPinned: bool
    def __init__(self, ownerUserID: _Optional[str] = ..., friendUserID: _Optional[str] = ..., remark: _Optional[str] = ..., createTime: _Optional[int] = ..., addSource: _Optional[int] = ..., operatorUserID: _Optional[str] = ..., ex: _Optional[str] = ..., isPinned: _Optional[bool] = ...) -> None: ...

class GroupInfo(_message.Message):
    __slots__ = ("groupID", "groupName", "notification", "introduction", "faceURL", "ownerUserID", "createTime", "memberCount", "ex", "status", "creatorUserID", "groupType", "needVerification", "lookMemberInfo", "applyMemberFriend", "notificationUpdateTime", "notificationUserID")
    GROUPID_FIELD_NUMBER: _ClassVar[int]
    GROUPNAME_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_FIELD_NUMBER: _ClassVar[int]
    INTRODUCTION_FIELD_NUMBER: _ClassVar[int]
    FACEURL_FIELD_NUMBER: _ClassVar[int]
    OWNERUSERID_FIELD_NUMBER: _ClassVar[int]
    CREATETIME_FIELD_NUMBER: _ClassVar[int]
    MEMBERCOUNT_FIELD_NUMBER: _ClassVar[int]
    EX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATORUSERID_FIELD_NUMBER: _ClassVar[int]
    GROUPTYPE_FIELD_NUMBER: _ClassVar[int]
    NEEDVERIFICATION_FIELD_NUMBER: _ClassVar[int]
    LOOKMEMBERINFO_FIELD_NUMBER: _ClassVar[int]
    APPLYMEMBERFRIEND_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATIONUPDATETIME_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATIONUSERID_FIELD_NUMBER: _ClassVar[int]
    groupID: str
    groupName: str
    notification: str
    introduction: str
    faceURL: str
    ownerUserID: str
    createTime: int
    memberCount: int
    ex: str
    status: int
    creatorUserID: str
    groupType: int
    needVerification: int
    lookMemberInfo: int
    applyMemberFriend: int
    notificationUpdateTime: int
    notificationUserID: str
    def __init__(self, groupID: _Optional[str] = ..., groupName: _Optional[str] = ..., notification: _Optional[str] = ..., introduction: _Optional[str] = ..., faceURL: _Optional[str] = ..., ownerUserID: _Optional[str] = ..., createTime: _Optional[int] = ..., memberCount: _Optional[int] = ..., ex: _Optional[str] = ..., status: _Optional[int] = ..., creatorUserID: _Optional[str] = ..., groupType: _Optional[int] = ..., needVerification: _Optional[int] = ..., lookMemberInfo: _Optional[int] = ..., applyMemberFriend: _Optional[int] = ..., notificationUpdateTime: _Optional[int] = ..., notificationUserID: _Optional[str] = ...) -> None: ...

class ConversationMsg(_message.Message):
    __slots__ = ("conversation", "lastMsg", "user", "friend", "group", "maxSeq", "readSeq")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    LASTMSG_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    FRIEND_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MAXSEQ_FIELD_NUMBER: _ClassVar[int]
    READSEQ_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    lastMsg: bytes
    user: UserInfo
    friend: FriendInfoOnly
    group: GroupInfo
    maxSeq: int
    readSeq: int
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., lastMsg: _Optional[bytes] = ..., user: _Optional[_Union[UserInfo, _Mapping]] = ..., friend: _Optional[_Union[FriendInfoOnly, _Mapping]] = ..., group: _Optional[_Union[GroupInfo, _Mapping]] = ..., maxSeq: _Optional[int] = ..., readSeq: _Optional[int] = ...) -> None: ...

class GetActiveConversationsReq(_message.Message):
    __slots__ = ("ownerUserID", "count")
    OWNERUSERID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ownerUserID: str
    count: int
    def __init__(self, ownerUserID: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetActiveConversationsResp(_message.Message):
    __slots__ = ("unreadCount", "conversations")
    UNREADCOUNT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    unreadCount: int
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationMsg]
    def __init__(self, unreadCount: _Optional[int] = ..., conversations: _Optional[_Iterable[_Union[ConversationMsg, _Mapping]]] = ...) -> None: ...

class GetConversationsReq(_message.Message):
    __slots__ = ("ownerUserID", "conversationIDs")
    OWNERUSERID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONIDS_FIELD_NUMBER: _ClassVar[int]
    ownerUserID: str
    conversationIDs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ownerUserID: _Optional[str] = ..., conversationIDs: _Optional[_Iterable[str]] = ...) -> None: ...

class GetConversationsResp(_message.Message):
    __slots__ = ("unreadCount", "conversations")
    UNREADCOUNT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    unreadCount: int
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationMsg]
    def __init__(self, unreadCount: _Optional[int] = ..., conversations: _Optional[_Iterable[_Union[ConversationMsg, _Mapping]]] = ...) -> None: ...

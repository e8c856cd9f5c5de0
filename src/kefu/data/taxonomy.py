"""The e-commerce intent taxonomy and the 12 entity classes kefu annotates.

Intents are coarse enough to route and evaluate on, and each maps to one of the 11 groups of JDDC's real intent
taxonomy (配送, 退换, 发票, 客服, 产品咨询, 价保, 支付, bug, 维修, 评价, 预定), so shops that label with JDDC's 234
fine intents can map theirs onto ours.
"""

from __future__ import annotations

# intent id -> (Chinese name, JDDC group)
INTENTS: dict[str, tuple[str, str]] = {
    "product_inquiry": ("商品咨询", "产品咨询"),
    "size_recommendation": ("尺码推荐", "产品咨询"),
    "product_recommendation": ("商品推荐", "产品咨询"),
    "stock_inquiry": ("库存咨询", "预定"),
    "price_inquiry": ("价格咨询", "价保"),
    "promotion_inquiry": ("优惠活动咨询", "价保"),
    "payment": ("支付问题", "支付"),
    "order_status": ("订单查询", "配送"),
    "logistics_tracking": ("物流查询", "配送"),
    "logistics_delay": ("物流延迟", "配送"),
    "logistics_lost": ("快递丢件", "配送"),
    "logistics_damaged": ("商品破损", "配送"),
    "address_change": ("修改地址", "配送"),
    "refused_delivery": ("拒收", "配送"),
    "return_request": ("退货退款", "退换"),
    "exchange_request": ("换货", "退换"),
    "refund_status": ("退款进度", "退换"),
    "repair_request": ("维修", "维修"),
    "invoice": ("发票", "发票"),
    "complaint": ("投诉", "评价"),
    "human_handoff": ("转人工", "客服"),
    "greeting": ("问候与寒暄", "客服"),
    "other": ("其他", "客服"),
}

# The 12 entity classes: id -> Chinese name. Values (``Entity.value``) are normalised: fen for money, ints for counts.
ENTITY_TYPES: dict[str, str] = {
    "product": "商品",
    "brand": "品牌",
    "category": "品类",
    "color": "颜色",
    "size": "尺码",
    "material": "材质",
    "money": "价格/金额",
    "quantity": "数量",
    "order_no": "订单号",
    "logistics": "物流单号/快递公司",
    "promotion": "优惠活动",
    "time": "时间",
}

"""Deterministic generator for the sample shop 「山岚户外旗舰店」 (see SCHEMA.md).

Writes the knowledge files (products, relations, promotions, policies, playbooks, orders, FAQ) and 400+ raw
customer-service dialogues in five formats. Stdlib only and seeded, so ``python examples/shop/generate.py`` rewrites
byte-identical files; ``tests/test_sample_shop.py`` checks that. Agent answers are computed from the knowledge
(prices, promotion arithmetic in fen, return windows, order statuses) so the sample is internally consistent; raw PII
and PII look-alikes are injected on purpose so that the cleaning stage has real work.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

TZ = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=TZ)  # the snapshot time of orders.json
SHOP_NAME = "山岚户外旗舰店"

CLOTH = "S|M|L|XL|XXL|3XL"
W_CLOTH = "XS|S|M|L|XL"
SHOE_M = "39|40|41|42|43|44|45"
SHOE_W = "35|36|37|38|39|40"
KIDS = "110|120|130|140|150|160"

# (category, name, aliases, price_yuan, colors, sizes, material, style, description, brand)
CATALOGUE: list[tuple[str, str, str, int, str, str, str, str, str, str]] = [
    ("冲锋衣", "X1三合一冲锋衣 男款", "X1冲锋衣|X1|三合一冲锋衣|那件蓝色冲锋衣", 599, "雾霾蓝|曜石黑|松针绿", CLOTH,
     "外层100%尼龙2层压胶面料，内胆300g摇粒绒", "城市通勤", "防水指数10000mm，透湿8000g/㎡/24h，内胆可拆卸单穿", "山岚"),
    ("冲锋衣", "X1三合一冲锋衣 女款", "X1女款|女款三合一|女款冲锋衣", 599, "樱粉|雾霾蓝|曜石黑", W_CLOTH,
     "外层100%尼龙2层压胶面料，内胆300g摇粒绒", "城市通勤", "防水指数10000mm，收腰版型，内胆可拆卸", "山岚"),
    ("冲锋衣", "X2轻量硬壳冲锋衣", "X2|X2硬壳|轻量冲锋衣|橙色冲锋衣", 899, "火焰橙|深海蓝|曜石黑", CLOTH,
     "20D尼龙+山岚TEX三层防水透湿膜", "专业登山", "防水指数20000mm，透湿15000g/㎡/24h，整衣重约350g", "山岚Pro"),
    ("冲锋衣", "城市软壳冲锋衣", "软壳衣|通勤软壳|软壳", 399, "炭灰|藏青|卡其", CLOTH,
     "聚酯纤维94%+氨纶6%复合摇粒绒", "城市通勤", "防泼水防风，四面弹，适合春秋通勤", "山岚"),
    ("冲锋衣", "儿童三合一冲锋衣", "儿童冲锋衣|童款冲锋衣|小孩冲锋衣", 329, "柠檬黄|天空蓝|玫红", KIDS,
     "尼龙涂层面料+摇粒绒内胆", "休闲", "防水指数5000mm，反光条设计，按身高选码", "山岚"),
    ("冲锋衣", "团体定制刺绣冲锋衣", "定制冲锋衣|团建冲锋衣|印logo冲锋衣", 459, "曜石黑|藏青|大红", CLOTH,
     "聚酯纤维涂层面料+抓绒内胆", "休闲", "支持刺绣/印字定制，定制款下单后7-10天发货", "山岚"),
    ("羽绒服", "珠峰800蓬鹅绒羽绒服", "800蓬羽绒服|鹅绒服|珠峰羽绒服|珠峰", 1599, "曜石黑|极地白|火焰橙", CLOTH,
     "90%白鹅绒，蓬松度800，充绒量220g，20D尼龙面料", "专业登山", "适合-25℃左右环境，连帽可调节", "山岚Pro"),
    ("羽绒服", "轻薄羽绒内胆", "羽绒内胆|轻羽绒|薄款羽绒服|轻薄羽绒服", 399, "曜石黑|藏青|雾霾蓝|燕麦色", CLOTH,
     "90%白鸭绒，充绒量80g，15D尼龙面料", "轻量徒步", "可收纳进自带小袋，可做冲锋衣内胆", "山岚"),
    ("羽绒服", "城市长款羽绒服 女款", "长款羽绒服|过膝羽绒服|女款长羽绒", 999, "奶白|曜石黑|焦糖色", W_CLOTH,
     "90%白鸭绒，充绒量200g，防钻绒面料", "城市通勤", "过膝长度，双向拉链，适合北方冬季通勤", "山岚"),
    ("羽绒服", "羽绒背心", "羽绒马甲|背心|马甲", 299, "曜石黑|橄榄绿|藏青", CLOTH,
     "90%白鸭绒，充绒量70g", "休闲", "立领设计，可内搭可外穿", "山岚"),
    ("羽绒服", "极寒远征连帽羽绒服", "远征羽绒服|极寒羽绒服|远征", 2299, "火焰橙|曜石黑", CLOTH,
     "95%白鹅绒，蓬松度900，充绒量320g", "专业登山", "适合-35℃高海拔环境，帽子兼容头盔", "山岚Pro"),
    ("抓绒衣", "立领摇粒绒抓绒衣", "摇粒绒|抓绒衣|摇粒绒外套", 199, "燕麦色|炭灰|墨绿|藏青", CLOTH,
     "100%聚酯纤维摇粒绒，克重300g", "休闲", "双面摇粒绒，保暖不起球", "山岚"),
    ("抓绒衣", "Thermal200抓绒夹克", "抓绒夹克|200抓绒|Thermal200", 329, "炭灰|深海蓝|火焰橙", CLOTH,
     "山岚Thermal200抓绒面料（聚酯纤维100%）", "轻量徒步", "轻量透气，适合做徒步中层", "山岚Pro"),
    ("抓绒衣", "女款半拉链抓绒衫", "半拉链抓绒|女款抓绒|女抓绒衣", 179, "樱粉|燕麦色|雾霾蓝", W_CLOTH,
     "100%聚酯纤维细抓绒", "休闲", "半拉链套头款，修身", "山岚"),
    ("抓绒衣", "X1专用抓绒内胆", "X1内胆|冲锋衣内胆|抓绒内胆", 229, "曜石黑|炭灰", CLOTH,
     "100%聚酯纤维摇粒绒300g", "城市通勤", "与X1三合一冲锋衣拉链兼容，可单独购买", "山岚"),
    ("速干T恤", "轻风速干T恤 男款", "速干T恤|速干衣|短袖速干|轻风T恤", 99, "白|黑|湖蓝|荧光绿", CLOTH,
     "聚酯纤维88%+氨纶12%", "轻量徒步", "吸湿速干，UPF30+", "山岚"),
    ("速干T恤", "轻风速干T恤 女款", "女款速干|女速干短袖|女款速干T恤", 99, "白|樱粉|湖蓝|黑", W_CLOTH,
     "聚酯纤维88%+氨纶12%", "轻量徒步", "吸湿速干，修身版型", "山岚"),
    ("速干T恤", "防晒长袖速干衣", "防晒速干衣|长袖速干|防晒衣", 159, "白|浅灰|湖蓝", CLOTH,
     "锦纶85%+氨纶15%冰感面料", "轻量徒步", "UPF50+防晒，拇指扣设计", "山岚"),
    ("速干T恤", "美丽诺羊毛T恤", "羊毛T恤|美丽诺|美丽诺T恤", 399, "炭灰|藏青|墨绿", CLOTH,
     "100%美丽诺羊毛，150g/㎡", "专业登山", "抑菌防臭，多日徒步可连续穿着", "山岚Pro"),
    ("速干T恤", "速干内裤 男款两条装", "速干内裤|运动内裤|内裤", 89, "黑|灰", "M|L|XL|XXL",
     "锦纶82%+氨纶18%", "轻量徒步", "贴身衣物，拆封后不支持7天无理由退货", "山岚"),
    ("徒步鞋", "疾风低帮徒步鞋 男款", "疾风|疾风徒步鞋|低帮徒步鞋", 499, "沙色|炭灰|军绿", SHOE_M,
     "透气网布+翻毛牛皮，山岚抓地橡胶大底", "轻量徒步", "自重约380g/只，适合城郊徒步", "山岚"),
    ("徒步鞋", "疾风低帮徒步鞋 女款", "疾风女款|女款徒步鞋", 499, "沙色|浅灰|樱粉", SHOE_W,
     "透气网布+翻毛牛皮，山岚抓地橡胶大底", "轻量徒步", "女款楦型，自重约320g/只", "山岚"),
    ("徒步鞋", "涉水溯溪鞋", "溯溪鞋|涉水鞋|两栖鞋", 299, "黑|湖蓝", SHOE_M,
     "速干网布+排水鞋底", "休闲", "快速排水，适合溯溪和海边", "山岚"),
    ("徒步鞋", "防水中帮徒步鞋", "中帮徒步鞋|防水徒步鞋|中帮鞋", 699, "炭灰|棕|军绿", SHOE_M,
     "反毛皮+防水透湿内膜", "轻量徒步", "防水内膜，保护脚踝", "山岚Pro"),
    ("登山鞋", "峰行者高帮登山鞋 男款", "峰行者|高帮登山鞋|登山靴", 1099, "棕|黑", SHOE_M,
     "1.8mm磨砂牛皮+防水透湿内膜，耐磨大底", "专业登山", "支撑性强，适合重装徒步", "山岚Pro"),
    ("登山鞋", "峰行者高帮登山鞋 女款", "峰行者女款|女款登山鞋", 899, "棕|灰蓝", SHOE_W,
     "1.6mm磨砂牛皮+防水透湿内膜", "专业登山", "女款楦型，支撑性强", "山岚Pro"),
    ("登山鞋", "重装登山靴", "重装靴|重装登山鞋", 1699, "棕", SHOE_M,
     "2.4mm全粒面皮革+防水内膜", "专业登山", "适合负重20kg以上长线", "山岚Pro"),
    ("登山鞋", "雪山冰爪兼容登山靴", "冰爪靴|雪山靴|高山靴", 2499, "火焰橙|黑", SHOE_M,
     "超纤皮革+保暖层+防水内膜", "专业登山", "兼容半自动冰爪，适合雪山攀登", "山岚Pro"),
    ("双肩包", "云径28L徒步背包", "云径|28L背包|云径28", 399, "炭灰|深海蓝|火焰橙", "28L",
     "210D高密尼龙", "轻量徒步", "背负透气网架，附防雨罩", "山岚"),
    ("双肩包", "云径40L徒步背包", "40L背包|云径40", 549, "炭灰|墨绿", "40L",
     "210D高密尼龙", "轻量徒步", "适合2-3天线路，附防雨罩", "山岚"),
    ("双肩包", "远行65+10L重装背包", "65L背包|重装包|远行65", 1099, "曜石黑|火焰橙", "65+10L",
     "420D牛津布+210D尼龙", "专业登山", "可调背长，铝合金支撑", "山岚Pro"),
    ("双肩包", "城市通勤双肩包", "通勤包|电脑包|城市背包", 259, "曜石黑|炭灰", "20L",
     "防泼水聚酯纤维", "城市通勤", "可放15.6英寸电脑", "山岚"),
    ("双肩包", "儿童徒步背包", "儿童背包|小孩背包", 159, "柠檬黄|天空蓝", "12L",
     "210D尼龙", "休闲", "胸扣防滑，反光条", "山岚"),
    ("帐篷", "星野二人双层帐篷", "二人帐篷|星野|星野二人", 899, "沙色|墨绿", "2人",
     "20D硅涂尼龙外帐，铝合金杆", "轻量徒步", "整帐重约1.6kg，防水指数4000mm", "山岚"),
    ("帐篷", "星野三人双层帐篷", "三人帐篷|星野三人", 1199, "沙色|墨绿", "3人",
     "20D硅涂尼龙外帐，铝合金杆", "轻量徒步", "整帐重约2.2kg，双门双前厅", "山岚"),
    ("帐篷", "自动速开帐篷", "速开帐篷|自动帐篷|公园帐篷", 399, "浅灰|墨绿", "3-4人",
     "190T涂银聚酯纤维，玻纤杆", "休闲", "3秒速开，适合公园露营", "山岚"),
    ("帐篷", "轻量单人帐篷", "单人帐|单人帐篷", 1299, "沙色", "1人",
     "15D硅涂尼龙，DAC铝杆", "专业登山", "整帐重约1.2kg", "山岚Pro"),
    ("睡袋", "-5℃羽绒睡袋", "羽绒睡袋|零下5度睡袋", 899, "火焰橙|深海蓝", "标准|加长",
     "90%白鸭绒，充绒量500g", "轻量徒步", "舒适温度-5℃，极限温度-12℃", "山岚"),
    ("睡袋", "信封式棉睡袋", "棉睡袋|信封睡袋", 199, "墨绿|浅灰", "标准",
     "中空棉填充", "休闲", "舒适温度10℃，可拼接双人", "山岚"),
    ("睡袋", "-15℃高山羽绒睡袋", "高山睡袋|零下15度睡袋", 1899, "火焰橙", "标准|加长",
     "95%白鹅绒，充绒量900g", "专业登山", "舒适温度-15℃，极限温度-25℃", "山岚Pro"),
    ("睡袋", "睡袋内胆", "内胆|睡袋内衬", 129, "浅灰|湖蓝", "标准",
     "速干涤纶", "休闲", "卫生隔脏，可提升3℃", "山岚"),
    ("登山杖", "碳纤维三节折叠登山杖", "碳纤维登山杖|折叠杖|碳杖", 299, "曜石黑|火焰橙", "110-130cm",
     "碳纤维杖身+EVA握把", "专业登山", "单支约200g，折叠长度36cm", "山岚Pro"),
    ("登山杖", "铝合金外锁登山杖 一对", "铝合金登山杖|外锁登山杖|铝杖", 159, "炭灰|深海蓝", "105-135cm",
     "7075铝合金", "轻量徒步", "外锁快调，一对装", "山岚"),
    ("登山杖", "登山杖替换杖尖套装", "杖尖|杖尖套|橡胶杖尖", 39, "黑", "",
     "钨钢杖尖+橡胶保护套", "轻量徒步", "适配本店全部登山杖", "山岚"),
    ("保温杯", "316不锈钢保温杯", "保温杯|316保温杯|水杯", 129, "曜石黑|樱粉|松针绿", "500ml|750ml",
     "316不锈钢内胆", "城市通勤", "保温12小时以上", "山岚"),
    ("保温杯", "户外大容量保温壶", "保温壶|大保温壶", 199, "曜石黑|火焰橙", "1.2L",
     "304不锈钢", "休闲", "保温24小时，带杯盖", "山岚"),
    ("保温杯", "钛合金随行杯", "钛杯|钛合金杯", 269, "原色", "450ml",
     "纯钛内胆", "轻量徒步", "重量仅150g", "山岚Pro"),
    ("保温杯", "激光刻字定制保温杯", "定制保温杯|刻字杯|刻字保温杯", 159, "曜石黑|极地白", "500ml",
     "316不锈钢内胆", "休闲", "可激光刻字，定制款不支持7天无理由退货", "山岚"),
    ("帽子", "防晒渔夫帽", "渔夫帽|遮阳帽", 79, "卡其|白|黑", "M(56-58cm)|L(58-60cm)",
     "锦纶速干面料", "轻量徒步", "UPF50+，可折叠", "山岚"),
    ("帽子", "美丽诺针织帽", "毛线帽|针织帽|羊毛帽", 99, "炭灰|藏青|大红", "均码",
     "美丽诺羊毛50%+腈纶50%", "休闲", "双层保暖", "山岚"),
    ("帽子", "速干棒球帽", "棒球帽|鸭舌帽", 69, "黑|白|卡其", "均码",
     "聚酯纤维速干面料", "城市通勤", "可调节后扣", "山岚"),
    ("帽子", "抓绒护耳帽", "护耳帽|雷锋帽", 129, "曜石黑|炭灰", "M|L",
     "防风面料+抓绒内里", "专业登山", "护耳可收起", "山岚"),
    ("手套", "防风触屏抓绒手套", "触屏手套|抓绒手套", 89, "曜石黑|炭灰", "S|M|L|XL",
     "防风抓绒", "城市通勤", "食指拇指可触屏", "山岚"),
    ("手套", "防水滑雪手套", "滑雪手套|防水手套", 259, "曜石黑|火焰橙", "S|M|L|XL",
     "防水面料+200g保暖棉", "专业登山", "防水透湿内膜，腕部魔术贴", "山岚Pro"),
    ("手套", "登山半指手套", "半指手套|骑行手套", 69, "黑|军绿", "M|L|XL",
     "超纤皮+弹力布", "轻量徒步", "掌心耐磨", "山岚"),
    ("手套", "羽绒保暖手套", "羽绒手套|保暖手套", 199, "曜石黑", "M|L|XL",
     "90%白鸭绒填充", "专业登山", "适合-20℃", "山岚Pro"),
    ("袜子", "美丽诺中厚徒步袜", "羊毛袜|徒步袜|美丽诺袜子", 69, "炭灰|墨绿", "M(36-39)|L(40-43)|XL(44-46)",
     "美丽诺羊毛70%+锦纶28%+氨纶2%", "轻量徒步", "毛圈加厚，减震防磨", "山岚"),
    ("袜子", "速干运动袜 三双装", "运动袜|速干袜", 49, "白|黑|灰", "M(36-39)|L(40-43)",
     "Coolmax速干纤维", "轻量徒步", "三双装", "山岚"),
    ("袜子", "加厚登山袜", "登山袜|厚袜子", 79, "炭灰|大红", "L(40-43)|XL(44-46)",
     "羊毛60%+腈纶40%", "专业登山", "全毛圈加厚，适合高帮鞋", "山岚Pro"),
    ("袜子", "五趾袜 两双装", "五趾袜|分趾袜", 45, "黑|灰", "M(36-39)|L(40-43)",
     "棉75%+锦纶25%", "轻量徒步", "防止脚趾摩擦起泡", "山岚"),
]

CATEGORIES = ["冲锋衣", "羽绒服", "抓绒衣", "速干T恤", "徒步鞋", "登山鞋", "双肩包", "帐篷", "睡袋", "登山杖",
              "保温杯", "帽子", "手套", "袜子"]
CLOTHING = {"冲锋衣", "羽绒服", "抓绒衣", "速干T恤"}
SHOES = {"徒步鞋", "登山鞋"}


@dataclass
class Product:
    sku: str
    name: str
    aliases: list[str]
    category: str
    brand: str
    price_fen: int
    stock: int
    colors: list[str]
    sizes: list[str]
    material: str
    style: str
    description: str


@dataclass
class Cart:
    """Cart lines: (product, quantity)."""

    lines: list[tuple[Product, int]] = field(default_factory=list)

    @property
    def subtotal(self) -> int:
        return sum(p.price_fen * q for p, q in self.lines)


def yuan(fen: int) -> str:
    """Fen -> '599元' or '509.15元' (exact, never float)."""
    return f"{fen // 100}元" if fen % 100 == 0 else f"{fen // 100}.{fen % 100:02d}元"


def yuan_num(fen: int) -> str:
    return yuan(fen)[:-1]


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def cn_date(dt: datetime) -> str:
    return f"{dt.month}月{dt.day}日"


def cn_datetime(dt: datetime) -> str:
    return f"{dt.month}月{dt.day}日{dt.hour:02d}:{dt.minute:02d}"


# ----------------------------------------------------------------------------------------------------------------
# PII and look-alikes
# ----------------------------------------------------------------------------------------------------------------
MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153", "157",
                   "158", "159", "176", "177", "180", "181", "182", "183", "186", "187", "188", "189", "191", "198",
                   "199"]
# (region code, province, city, district) -- real GB/T 2260 codes.
REGIONS = [
    ("110105", "北京市", "北京市", "朝阳区"), ("110108", "北京市", "北京市", "海淀区"),
    ("310104", "上海市", "上海市", "徐汇区"), ("310115", "上海市", "上海市", "浦东新区"),
    ("440305", "广东省", "深圳市", "南山区"), ("440106", "广东省", "广州市", "天河区"),
    ("330106", "浙江省", "杭州市", "西湖区"), ("330110", "浙江省", "杭州市", "余杭区"),
    ("510107", "四川省", "成都市", "武侯区"), ("420111", "湖北省", "武汉市", "洪山区"),
    ("320106", "江苏省", "南京市", "鼓楼区"), ("320505", "江苏省", "苏州市", "虎丘区"),
    ("370202", "山东省", "青岛市", "市南区"), ("610113", "陕西省", "西安市", "雁塔区"),
    ("500103", "重庆市", "重庆市", "渝中区"), ("430104", "湖南省", "长沙市", "岳麓区"),
    ("350203", "福建省", "厦门市", "思明区"), ("530102", "云南省", "昆明市", "五华区"),
]
AREA_CODES = {"北京市": "010", "上海市": "021", "深圳市": "0755", "广州市": "020", "杭州市": "0571", "成都市": "028",
              "武汉市": "027", "南京市": "025", "苏州市": "0512", "青岛市": "0532", "西安市": "029", "重庆市": "023",
              "长沙市": "0731", "厦门市": "0592", "昆明市": "0871"}
ROADS = ["文三路", "学院路", "中山路", "建设路", "人民路", "科技园南路", "天府大道", "珞喻路", "长江路", "解放路",
         "滨江大道", "东湖路", "高新四路", "望京街", "张江路", "莲花路", "环城北路", "五一大道"]
COMMUNITIES = ["金都花园", "阳光小区", "绿城桂花苑", "万科城市花园", "翠苑一区", "碧桂园", "保利香槟国际", "龙湖春江郦城",
               "华润二十四城", "世纪新城", "滨江名苑", "紫荆公寓", "锦绣家园", "融创玖樟台"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
         "秀兰", "霞", "平", "刚", "桂英", "浩然", "子涵", "欣怡", "宇轩", "梓萱", "一鸣", "思远", "雨桐", "嘉怡", "晓东",
         "建华", "文博", "佳琪", "俊杰", "海燕", "志强", "婷婷"]
PINYIN = ["wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "lin", "he",
          "gao", "luo"]
BANK_BINS = ["622202", "622848", "621700", "622588", "622262", "621226", "625965", "623668"]
ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
ID_CHECK = "10X98765432"


def id_checksum(first17: str) -> str:
    """GB 11643 check character (ISO 7064 MOD 11-2)."""
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS)) % 11]


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def luhn_digit(partial: str) -> str:
    for c in "0123456789":
        if luhn_ok(partial + c):
            return c
    raise AssertionError("unreachable")


class Pii:
    """Random but valid-looking personal data from one seeded RNG."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def name(self) -> str:
        return self.r.choice(SURNAMES) + self.r.choice(GIVEN)

    def mobile_raw(self) -> str:
        return self.r.choice(MOBILE_PREFIXES) + "".join(self.r.choice("0123456789") for _ in range(8))

    def mobile(self) -> str:
        m = self.mobile_raw()
        style = self.r.random()
        if style < 0.55:
            return m
        if style < 0.72:
            return f"{m[:3]}-{m[3:7]}-{m[7:]}"
        if style < 0.88:
            return f"{m[:3]} {m[3:7]} {m[7:]}"
        return "+86 " + m

    def landline(self, city: str | None = None) -> str:
        code = AREA_CODES.get(city or "", None) or self.r.choice(sorted(AREA_CODES.values()))
        n = 7 if self.r.random() < 0.2 else 8
        first = self.r.choice("2345678")
        return f"{code}-{first}" + "".join(self.r.choice("0123456789") for _ in range(n - 1))

    def id_card(self, region: str | None = None) -> str:
        region = region or self.r.choice(REGIONS)[0]
        birth = datetime(1965, 1, 1) + timedelta(days=self.r.randrange(0, 14600))
        first17 = region + birth.strftime("%Y%m%d") + f"{self.r.randrange(0, 1000):03d}"
        return first17 + id_checksum(first17)

    def bank_card(self) -> str:
        length = self.r.choice([16, 19, 19])
        body = self.r.choice(BANK_BINS) + "".join(self.r.choice("0123456789") for _ in range(length - 7))
        card = body + luhn_digit(body)
        if self.r.random() < 0.35:
            card = " ".join(card[i:i + 4] for i in range(0, len(card), 4))
        return card

    def email(self) -> str:
        r = self.r.random()
        if r < 0.4:
            return f"{self.r.randrange(10000000, 2999999999)}@qq.com"
        user = self.r.choice(PINYIN) + self.r.choice(["", ".", "_"]) + self.r.choice(PINYIN) + str(
            self.r.randrange(1, 999))
        return f"{user}@{self.r.choice(['163.com', '126.com', 'gmail.com', 'outlook.com', 'sina.com', 'foxmail.com'])}"

    def region(self) -> tuple[str, str, str, str]:
        return self.r.choice(REGIONS)

    def address(self, region: tuple[str, str, str, str] | None = None) -> str:
        code, prov, city, dist = region or self.region()
        prefix = city + dist if prov == city else prov + city + dist
        return (f"{prefix}{self.r.choice(ROADS)}{self.r.randrange(1, 999)}号{self.r.choice(COMMUNITIES)}"
                f"{self.r.randrange(1, 30)}栋{self.r.randrange(1, 6)}单元{self.r.randrange(1, 33)}{self.r.randrange(1, 5):02d}室")

    def masked_mobile(self, m: str) -> str:
        d = "".join(c for c in m if c.isdigit())[-11:]
        return d[:3] + "****" + d[7:]

    def uscc(self) -> str:
        """A company unified social credit code (18 chars, not personal data): a look-alike of ID numbers."""
        chars = "0123456789ABCDEFGHJKLMNPQRTUWXY"
        return "91" + self.r.choice(REGIONS)[0] + "".join(self.r.choice(chars) for _ in range(10))

    def not_a_phone(self) -> str:
        """An 11-digit number that is not a mobile number (prefix 10x/12x or starts with 2-9)."""
        return self.r.choice(["100", "120", "123", "205", "860", "690"]) + "".join(
            self.r.choice("0123456789") for _ in range(8))


# ----------------------------------------------------------------------------------------------------------------
# Promotion arithmetic (the same rules SCHEMA.md states)
# ----------------------------------------------------------------------------------------------------------------
def promo_active(p: dict, at: datetime) -> bool:
    return datetime.fromisoformat(p["starts_at"]) <= at <= datetime.fromisoformat(p["ends_at"])


def promo_eligible(p: dict, prod: Product) -> bool:
    e = p["eligible"]
    return bool(e.get("all")) or prod.sku in e.get("skus", []) or prod.category in e.get("categories", [])


ORDER_OF_TYPES = {"discount": 0, "full_reduction": 1, "per_full_reduction": 1, "coupon": 2, "gift": 3}


def apply_combo(cart: Cart, combo: list[dict]) -> dict[str, Any]:
    """Apply promotions in schema order: discount -> (per-)full reduction -> coupon; gifts add items.

    Returns {"subtotal", "steps": [(promo, saving_fen, note)], "total", "gifts": [(sku, qty)]}. Each step's
    threshold is checked on the eligible lines' amount after the previous steps. Discounts floor to the fen.
    """
    amounts = [p.price_fen * q for p, q in cart.lines]
    steps: list[tuple[dict, int, str]] = []
    gifts: list[tuple[str, int]] = []
    total_red = 0
    for promo in sorted(combo, key=lambda x: (ORDER_OF_TYPES[x["type"]], x["id"])):
        elig = [i for i, (p, _) in enumerate(cart.lines) if promo_eligible(promo, p)]
        if not elig:
            continue
        t = promo["type"]
        if t == "discount":
            left = promo.get("max_quantity") or 10 ** 9
            saving = 0
            for i in elig:
                p, q = cart.lines[i]
                n = min(q, left)
                left -= n
                cut = p.price_fen * n - p.price_fen * n * promo["rate_percent"] // 100
                amounts[i] -= cut
                saving += cut
            if saving:
                steps.append((promo, saving, ""))
            continue
        base = sum(amounts[i] for i in elig)
        if t == "full_reduction":
            reached = [tr for tr in promo["tiers"] if base >= tr["threshold_fen"]]
            if reached:
                tr = max(reached, key=lambda x: x["threshold_fen"])
                steps.append((promo, tr["reduction_fen"], f"满{yuan(tr['threshold_fen'])[:-1]}减{yuan_num(tr['reduction_fen'])}"))
                total_red += tr["reduction_fen"]
        elif t == "per_full_reduction":
            n = base // promo["per_threshold_fen"]
            saving = n * promo["per_reduction_fen"]
            if promo.get("cap_fen"):
                saving = min(saving, promo["cap_fen"])
            if saving:
                steps.append((promo, saving, f"{n}个{yuan_num(promo['per_threshold_fen'])}"))
                total_red += saving
        elif t == "coupon":
            if base - total_red >= promo["threshold_fen"]:
                steps.append((promo, promo["reduction_fen"], ""))
                total_red += promo["reduction_fen"]
        elif t == "gift":
            if base >= promo["threshold_fen"]:
                gifts.append((promo["gift_sku"], promo["gift_quantity"]))
                steps.append((promo, 0, ""))
    total = max(0, sum(amounts) - total_red)
    return {"subtotal": cart.subtotal, "steps": steps, "total": total, "gifts": gifts}


def best_price(cart: Cart, promos: list[dict], at: datetime, codes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The best legal combination for the customer.

    Every active promotion that covers an item in the cart is applied automatically (coupons only when their code
    is given), except that a stack_group contributes exactly one of its promotions (the one giving the lowest
    total) and an exclusive promotion applies alone; the exclusive option is taken when it is cheaper.
    """
    active = [p for p in promos if promo_active(p, at) and (p["type"] != "coupon" or p.get("code") in codes)]
    active = [p for p in active if any(promo_eligible(p, prod) for prod, _ in cart.lines)]
    groups: dict[str, list[dict]] = {}
    for p in active:
        if not p["exclusive"]:
            groups.setdefault(p["stack_group"], []).append(p)
    options: list[list[dict]] = [[p] for p in active if p["exclusive"]]
    keys = sorted(groups)
    for choice in itertools.product(*[groups[k] for k in keys]):
        options.append(list(choice))
    best = None
    for combo in options:
        res = apply_combo(cart, combo)
        applied = [s for s in res["steps"]]
        key = (res["total"], -len(res["gifts"]), len(applied))
        if best is None or key < best[0]:
            best = (key, res)
    assert best is not None
    return best[1]


# ----------------------------------------------------------------------------------------------------------------
# Knowledge
# ----------------------------------------------------------------------------------------------------------------
def build_products(rng: random.Random) -> list[Product]:
    counters: dict[str, int] = {}
    out = []
    for cat, name, aliases, price, colors, sizes, material, style, desc, brand in CATALOGUE:
        counters[cat] = counters.get(cat, 0) + 1
        sku = f"SL-{10000 + CATEGORIES.index(cat) * 100 + counters[cat] * (3 if counters[cat] > 1 else 1) + 20}"
        r = rng.random()
        stock = 0 if r < 0.1 else rng.randrange(1, 10) if r < 0.25 else rng.randrange(20, 900)
        out.append(Product(sku, name, aliases.split("|") if aliases else [], cat, brand, price * 100, stock,
                           colors.split("|") if colors else [], sizes.split("|") if sizes else [], material, style,
                           desc))
    # The flagship must be in stock for the demo; one popular colour-size question needs an out-of-stock item.
    out[0].stock = max(out[0].stock, 236)
    return out


def build_relations(products: list[Product], rng: random.Random) -> list[tuple[str, str, str]]:
    by_name = {p.name: p for p in products}
    rel: list[tuple[str, str, str]] = []

    def add(a: str, r: str, b: str) -> None:
        rel.append((by_name[a].sku, r, by_name[b].sku))

    for shell in ["X1三合一冲锋衣 男款", "X1三合一冲锋衣 女款"]:
        add("X1专用抓绒内胆", "compatible-with", shell)
        add("轻薄羽绒内胆", "compatible-with", shell)
    add("X2轻量硬壳冲锋衣", "compatible-with", "Thermal200抓绒夹克")
    add("登山杖替换杖尖套装", "accessory-of", "碳纤维三节折叠登山杖")
    add("登山杖替换杖尖套装", "accessory-of", "铝合金外锁登山杖 一对")
    add("睡袋内胆", "accessory-of", "-5℃羽绒睡袋")
    add("睡袋内胆", "accessory-of", "-15℃高山羽绒睡袋")
    add("睡袋内胆", "accessory-of", "信封式棉睡袋")
    add("美丽诺中厚徒步袜", "accessory-of", "疾风低帮徒步鞋 男款")
    add("美丽诺中厚徒步袜", "accessory-of", "疾风低帮徒步鞋 女款")
    add("加厚登山袜", "accessory-of", "峰行者高帮登山鞋 男款")
    add("加厚登山袜", "accessory-of", "重装登山靴")
    add("加厚登山袜", "accessory-of", "雪山冰爪兼容登山靴")
    add("-5℃羽绒睡袋", "compatible-with", "星野二人双层帐篷")
    add("-5℃羽绒睡袋", "compatible-with", "星野三人双层帐篷")
    add("碳纤维三节折叠登山杖", "compatible-with", "远行65+10L重装背包")
    # alternatives: products of the same category and gender, adjacent in price
    for cat in CATEGORIES:
        items = sorted([p for p in products if p.category == cat and "定制" not in p.name and "套装" not in p.name],
                       key=lambda p: p.price_fen)
        for a, b in zip(items, items[1:]):
            if ("女款" in a.name) == ("女款" in b.name) and ("儿童" in a.name) == ("儿童" in b.name):
                rel.append((a.sku, "alternative-to", b.sku))
    return rel


def build_promotions(products: list[Product]) -> list[dict[str, Any]]:
    by_name = {p.name: p for p in products}
    cup = by_name["316不锈钢保温杯"].sku
    sock = by_name["美丽诺中厚徒步袜"].sku

    def p(pid, name, typ, start, end, group, desc, eligible=None, exclusive=False, **kw):
        d: dict[str, Any] = {"id": pid, "name": name, "type": typ}
        d.update(kw)
        d["eligible"] = eligible or {"skus": [], "categories": [], "all": True}
        d["starts_at"] = start
        d["ends_at"] = end
        d["stack_group"] = group
        d["exclusive"] = exclusive
        d["description"] = desc
        return d

    def cats(*c):
        return {"skus": [], "categories": list(c), "all": False}

    return [
        p("P001", "双11跨店满减", "full_reduction", "2026-11-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00", "shop",
          "全店满300减50，满600减120（每单享一次，取最高档）",
          tiers=[{"threshold_fen": 30000, "reduction_fen": 5000}, {"threshold_fen": 60000, "reduction_fen": 12000}]),
        p("P002", "户外小件每满200减20", "per_full_reduction", "2026-11-15T00:00:00+08:00",
          "2026-12-12T23:59:59+08:00", "shop", "速干T恤、帽子、手套、袜子、登山杖、保温杯每满200减20，最高减100",
          eligible=cats("速干T恤", "帽子", "手套", "袜子", "登山杖", "保温杯"),
          per_threshold_fen=20000, per_reduction_fen=2000, cap_fen=10000),
        p("P003", "羽绒服八五折", "discount", "2026-11-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00",
          "category_discount", "全部羽绒服八五折", eligible=cats("羽绒服"), rate_percent=85),
        p("P004", "冲锋衣九折", "discount", "2026-11-10T00:00:00+08:00", "2026-12-12T23:59:59+08:00",
          "category_discount", "冲锋衣九折，每单限前2件", eligible=cats("冲锋衣"), rate_percent=90, max_quantity=2),
        p("P005", "满499赠保温杯", "gift", "2026-11-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00", "gift",
          "折后商品金额满499元赠316不锈钢保温杯1个（赠完即止）", threshold_fen=49900, gift_sku=cup, gift_quantity=1),
        p("P006", "店铺满200减30券", "coupon", "2026-11-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00", "coupon",
          "店铺优惠券：满200减30，券码SLHW30", threshold_fen=20000, reduction_fen=3000, code="SLHW30"),
        p("P007", "新人专享券", "coupon", "2026-01-01T00:00:00+08:00", "2026-12-31T23:59:59+08:00", "coupon",
          "新会员首单满99减10，券码NEW10", threshold_fen=9900, reduction_fen=1000, code="NEW10"),
        p("P008", "双12狂欢满减", "full_reduction", "2026-12-01T00:00:00+08:00", "2026-12-12T23:59:59+08:00", "shop",
          "双12全店满400减60，满800减150",
          tiers=[{"threshold_fen": 40000, "reduction_fen": 6000}, {"threshold_fen": 80000, "reduction_fen": 15000}]),
        p("P009", "国庆出游季满减", "full_reduction", "2026-10-01T00:00:00+08:00", "2026-10-07T23:59:59+08:00", "shop",
          "国庆期间全店满300减40", tiers=[{"threshold_fen": 30000, "reduction_fen": 4000}]),
        p("P010", "帐篷睡袋限时秒杀", "discount", "2026-11-20T00:00:00+08:00", "2026-11-30T23:59:59+08:00", "flash",
          "星野二人双层帐篷、-5℃羽绒睡袋秒杀七折，秒杀订单不与其他任何优惠同享",
          eligible={"skus": [by_name["星野二人双层帐篷"].sku, by_name["-5℃羽绒睡袋"].sku], "categories": [],
                    "all": False}, exclusive=True, rate_percent=70),
        p("P011", "夏季清仓速干T恤六折", "discount", "2026-08-01T00:00:00+08:00", "2026-08-31T23:59:59+08:00",
          "category_discount", "速干T恤六折清仓", eligible=cats("速干T恤"), rate_percent=60),
        p("P012", "年货节满减", "full_reduction", "2027-01-10T00:00:00+08:00", "2027-01-25T23:59:59+08:00", "shop",
          "年货节全店满500减80", tiers=[{"threshold_fen": 50000, "reduction_fen": 8000}]),
        p("P013", "买鞋送徒步袜", "gift", "2026-11-01T00:00:00+08:00", "2026-11-30T23:59:59+08:00", "gift_shoes",
          "购买任意徒步鞋/登山鞋赠美丽诺中厚徒步袜1双", eligible=cats("徒步鞋", "登山鞋"),
          threshold_fen=0, gift_sku=sock, gift_quantity=1),
    ]


def build_policies() -> list[dict[str, Any]]:
    def pol(cat, rd, ed, rep, snr, cond, exc, ship="买家（质量问题由卖家承担）"):
        return {"category": cat, "return_days": rd, "exchange_days": ed, "repair_days": rep,
                "seven_day_no_reason": snr, "conditions": cond, "exceptions": exc, "shipping_paid_by": ship}

    cloth = ["吊牌完好", "未洗涤未穿着", "不影响二次销售"]
    return [
        pol("*", 7, 15, 365, True, ["商品完好", "不影响二次销售"], []),
        pol("冲锋衣", 7, 15, 365, True, cloth, ["定制刺绣/印字款不支持7天无理由退货"]),
        pol("羽绒服", 7, 15, 365, True, cloth + ["未钻绒污损"], []),
        pol("抓绒衣", 7, 15, 180, True, cloth, []),
        pol("速干T恤", 7, 15, 90, True, cloth, ["速干内裤等贴身衣物拆封后不支持7天无理由退货"]),
        pol("徒步鞋", 7, 15, 180, True, ["鞋底无磨损", "鞋盒吊牌齐全"], []),
        pol("登山鞋", 7, 30, 365, True, ["鞋底无磨损", "鞋盒吊牌齐全"], []),
        pol("双肩包", 7, 15, 730, True, ["吊牌完好", "未使用"], []),
        pol("帐篷", 7, 15, 365, True, ["未搭建使用", "配件齐全"], []),
        pol("睡袋", 7, 15, 365, True, ["未使用", "压缩袋及吊牌齐全"], []),
        pol("登山杖", 7, 15, 730, True, ["未使用", "配件齐全"], []),
        pol("保温杯", 7, 15, 365, True, ["未使用", "包装完好"], ["激光刻字定制款不支持7天无理由退货"]),
        pol("帽子", 7, 15, 90, True, ["吊牌完好", "未佩戴"], []),
        pol("手套", 7, 15, 90, True, ["吊牌完好", "未佩戴"], []),
        pol("袜子", 7, 15, 0, True, ["未拆封"], ["已拆封或已穿着的袜子不支持7天无理由退货"], "买家（质量问题由卖家承担）"),
    ]


def build_playbooks() -> list[dict[str, Any]]:
    return [
        {"type": "delay", "steps": ["核实订单号与物流单号", "查询最新物流轨迹与停滞时长", "停滞超过24小时的向快递公司发起催件",
                                    "告知顾客已催件并约定回复时间", "停滞超过48小时升级物流专员并可补偿10元无门槛券"],
         "allowed_promises": ["已为您催促快递", "24小时内给您回复处理进度", "超时未更新可申请补发或退款"],
         "forbidden_promises": ["保证明天一定送到", "承诺具体送达时间", "承诺超出标准的现金赔偿"],
         "escalate_after_hours": 48},
        {"type": "lost", "steps": ["核实订单号与物流单号", "向快递公司提交丢件核查（一般1-3个工作日）",
                                   "确认丢件后为顾客补发或全额退款，由顾客选择", "补发订单优先顺丰发出"],
         "allowed_promises": ["确认丢件后为您补发或全额退款", "1-3个工作日内给您核查结果"],
         "forbidden_promises": ["在核查结果出来前先认定顾客签收", "要求顾客自行联系快递索赔"],
         "escalate_after_hours": 72},
        {"type": "damaged", "steps": ["请顾客提供外包装和商品破损照片", "核实签收时间（签收后7天内反馈的按运输破损处理，超过7天的按质量问题售后处理）",
                                      "商品破损的为顾客补发配件、换新或退货退款，运费由卖家承担", "向快递公司发起理赔（不需要顾客参与）"],
         "allowed_promises": ["运费由我们承担", "审核通过后为您换新或退款"],
         "forbidden_promises": ["要求顾客先自行承担运费", "拒绝处理外包装完好但商品损坏的情况"],
         "escalate_after_hours": 24},
        {"type": "address_change", "steps": ["核实订单状态", "待发货订单直接修改收货信息并请顾客核对",
                                             "已发货订单联系快递拦截改派（可能产生改派费，由顾客承担）", "改派失败的建议拒收后重新下单"],
         "allowed_promises": ["待发货订单可以为您直接修改", "已发货订单为您尝试联系快递改派"],
         "forbidden_promises": ["保证已发货订单一定改派成功", "在聊天中要求顾客提供身份证号"],
         "escalate_after_hours": 24},
        {"type": "refused", "steps": ["确认顾客拒收原因", "告知拒收后包裹退回仓库，仓库签收后1-3个工作日内退款",
                                      "非质量问题拒收的，来回运费从退款中扣除或由顾客承担", "质量问题拒收的，运费由卖家承担"],
         "allowed_promises": ["仓库签收后1-3个工作日内退款", "质量问题运费由我们承担"],
         "forbidden_promises": ["拒收后立即退款", "承诺免除非质量问题的退回运费"],
         "escalate_after_hours": 72},
    ]


CARRIERS = [("顺丰速运", "SF", 12), ("圆通速递", "YT", 13), ("京东物流", "JD", 13), ("中通快递", "", 14)]
ORDER_PLAN = ([("待付款", None)] * 4 + [("待发货", None)] * 6 + [("已发货", "normal")] * 7 + [("已发货", "delay")] * 4
              + [("已发货", "lost")] * 3 + [("已签收", "recent")] * 6 + [("已签收", "old")] * 4
              + [("已完成", "done")] * 8 + [("已取消", None)] * 3 + [("退款中", "refund")] * 5)
CITIES = ["杭州", "上海", "深圳", "北京", "成都", "武汉", "南京", "西安", "长沙", "广州"]


def build_orders(products: list[Product], promos: list[dict], rng: random.Random) -> list[dict[str, Any]]:
    orders = []
    used: set[str] = set()
    shop_city = "杭州"
    sellable = [p for p in products if "定制" not in p.name]
    for i, (status, kind) in enumerate(ORDER_PLAN):
        if kind == "old":
            created = datetime(2026, 11, rng.randrange(3, 9), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        elif kind == "done":
            created = datetime(2026, 10, rng.randrange(20, 31), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        elif kind == "delay":
            created = datetime(2026, 11, rng.randrange(19, 22), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        elif kind == "lost":
            created = datetime(2026, 11, rng.randrange(12, 17), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        elif kind in ("recent", "refund"):
            created = datetime(2026, 11, rng.randrange(18, 22), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        elif kind == "normal":
            created = datetime(2026, 11, rng.randrange(21, 24), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        elif status == "待付款":
            created = NOW - timedelta(minutes=rng.randrange(60, 240))
        elif status == "待发货":
            created = NOW - timedelta(minutes=rng.randrange(300, 2400))
        else:
            created = datetime(2026, 11, rng.randrange(5, 26), rng.randrange(8, 23), rng.randrange(60), tzinfo=TZ)
        while True:
            no = created.strftime("%y%m%d") + "".join(rng.choice("0123456789") for _ in range(10))
            if no not in used:
                used.add(no)
                break
        lines: list[tuple[Product, int]] = []
        for p in rng.sample(sellable, rng.choice([1, 1, 1, 2, 2, 3])):
            lines.append((p, 2 if p.price_fen < 10000 and rng.random() < 0.5 else 1))
        cart = Cart(lines)
        codes = ("NEW10",) if rng.random() < 0.2 else ("SLHW30",) if rng.random() < 0.25 else ()
        priced = best_price(cart, promos, created, codes)
        items = [{"sku": p.sku, "quantity": q, "unit_price_fen": p.price_fen} for p, q in lines]
        items += [{"sku": sku, "quantity": q, "unit_price_fen": 0} for sku, q in priced["gifts"]]
        paid = 0 if status in ("待付款", "已取消") else priced["total"]
        shipment = None
        if kind is not None:
            # the FAQ's rule: 顺丰 from 299 yuan or for mountaineering boots/tents, 京东 on request, else 圆通/中通
            if rng.random() < 0.15:
                carrier, prefix, ndig = CARRIERS[2]
            elif cart.subtotal >= 29900 or any(p.category in ("登山鞋", "帐篷") for p, _ in lines):
                carrier, prefix, ndig = CARRIERS[0]
            else:
                carrier, prefix, ndig = CARRIERS[1] if i % 2 else CARRIERS[3]
            tracking = prefix + ("7" if not prefix else "") + "".join(
                rng.choice("0123456789") for _ in range(ndig - (0 if prefix else 1)))
            dest = rng.choice(CITIES)
            t = created + timedelta(hours=rng.randrange(6, 30))
            events = [{"time": iso(t), "status": "已揽收", "location": f"{shop_city}市余杭区仓库"}]
            hops = [f"{shop_city}转运中心", "中转场", f"{dest}转运中心", f"{dest}营业部"]
            stop = {"normal": rng.randrange(1, 4), "delay": 2, "lost": 2}.get(kind, 4)
            for h in hops[:stop]:
                t += timedelta(hours=rng.randrange(5, 20))
                events.append({"time": iso(t), "status": "运输中" if "营业部" not in h else "派送中",
                               "location": h if h != "中转场" else "华东中转场"})
            if kind == "normal":
                while len(events) > 2 and datetime.fromisoformat(events[-1]["time"]) >= NOW - timedelta(hours=24):
                    events.pop()
            if kind == "lost":
                t += timedelta(hours=rng.randrange(20, 40))
                events.append({"time": iso(t), "status": "快件异常：包裹状态待核实", "location": "华东中转场"})
            if kind in ("recent", "old", "done", "refund"):
                t += timedelta(hours=rng.randrange(2, 8))
                events.append({"time": iso(t), "status": "已签收", "location": f"{dest}营业部（本人签收）"})
            shipment = {"carrier": carrier, "tracking_no": tracking, "events": events}
        orders.append({"order_no": no, "customer_id": f"C{rng.randrange(1, 400):04d}", "created_at": iso(created),
                       "status": status, "items": items, "paid_fen": paid, "shipment": shipment})
    for o in orders:  # every event must precede the snapshot by a day so dialogues after it see this status
        assert o["shipment"] is None or datetime.fromisoformat(o["shipment"]["events"][-1]["time"]) < NOW - timedelta(hours=24), o
    return orders


RATE_CN = {95: "九五折", 90: "九折", 88: "八八折", 85: "八五折", 80: "八折", 70: "七折", 60: "六折"}
SHOP_ADDRESS = "浙江省杭州市余杭区仓前街道良睦路1399号 山岚户外售后部"  # the shop's own, public address
MEN_CHART = [(165, "S"), (170, "M"), (175, "L"), (180, "XL"), (185, "XXL"), (999, "3XL")]
WOMEN_CHART = [(155, "XS"), (160, "S"), (165, "M"), (170, "L"), (999, "XL")]


def cloth_size(height_cm: int, weight_kg: int | None, women: bool) -> str:
    """Size chart shared by the FAQ and the agent: by height, one size up when weight is above height-100+8 kg."""
    chart = WOMEN_CHART if women else MEN_CHART
    idx = next(i for i, (h, _) in enumerate(chart) if height_cm < h)
    if weight_kg is not None and weight_kg > height_cm - 100 + 8 and idx < len(chart) - 1:
        idx += 1
    return chart[idx][1]


def shoe_size(daily: int) -> int:
    """Hiking/mountaineering shoes: one size above the everyday size (room for thick socks)."""
    return daily + 1


def kids_size(height_cm: int) -> str:
    """Kids' labels are body heights: the smallest label at least 5 cm above the child's height."""
    for s in [110, 120, 130, 140, 150, 160]:
        if s >= height_cm + 5:
            return str(s)
    return "160"


def build_faq(products: list[Product], promos: list[dict], policies: list[dict]) -> list[dict[str, str]]:
    pol = {p["category"]: p for p in policies}
    faq = [
        ("冲锋衣/羽绒服尺码怎么选？", "男款按身高：165以下S，165-169选M，170-174选L，175-179选XL，180-184选XXL，185及以上3XL；"
         "体重超过（身高-100+8）公斤的建议再大一码。女款：155以下XS，155-159选S，160-164选M，165-169选L，170及以上XL。", "size_recommendation"),
        ("号型175/92A是什么意思？", "175是适合的身高（cm），92是胸围（cm），A是体型。我们按身高对应尺码，175对应男款XL。", "size_recommendation"),
        ("徒步鞋、登山鞋要买大一码吗？", "建议在您日常运动鞋尺码基础上加一码，方便穿厚袜和下坡时不顶脚。日常码可按 脚长(mm)÷5−10 估算。", "size_recommendation"),
        ("儿童冲锋衣怎么选码？", "儿童款尺码就是适合的身高，建议选比孩子身高大5cm以上的最小尺码，例如身高120cm选130。", "size_recommendation"),
        ("冲锋衣防水吗？", "X1三合一防水指数10000mm，X2轻量硬壳20000mm，软壳款只防泼水不防大雨。", "product_inquiry"),
        ("X1的内胆可以单独穿吗？", "可以，X1三合一的摇粒绒内胆可拆卸单穿，也兼容单独购买的X1专用抓绒内胆和轻薄羽绒内胆。", "product_inquiry"),
        ("羽绒服充绒量是多少？", "珠峰800蓬鹅绒羽绒服充绒量220g，极寒远征320g，城市长款200g，轻薄内胆80g，羽绒背心70g。", "product_inquiry"),
        ("你们是正品吗？", "本店是山岚品牌官方旗舰店，所有商品均为正品，支持专柜验货。", "other"),
        ("从哪里发货？用什么快递？", "杭州仓发货，默认圆通/中通，订单满299元或登山鞋、帐篷类默认顺丰，京东物流可在备注中申请。", "logistics_tracking"),
        ("下单后多久发货？", "现货订单付款后48小时内发货，定制款7-10天发货，双11期间可能延迟至72小时。", "order_status"),
        ("支持哪些支付方式？", "支持支付宝、微信支付、银联云闪付和信用卡，暂不支持货到付款。", "payment"),
        ("可以分期吗？", "订单满300元支持花呗3期免息，其他分期的手续费以支付页面为准。", "payment"),
        ("付款后显示待付款怎么办？", "一般是支付渠道延迟，请在支付软件中确认是否扣款；已扣款未到账的一般30分钟内自动同步，超时请联系客服。", "payment"),
        ("满减活动能叠加吗？", "同一叠加组的活动不能同时使用：双11满300减50和户外小件每满200减20同属店铺满减，只享其中更优惠的一个；"
         "品类折扣、店铺满减、优惠券属于不同组可以叠加，计算顺序为 折扣→满减→优惠券。", "promotion_inquiry"),
        ("秒杀商品能用券吗？", "帐篷睡袋限时秒杀为独享活动，秒杀订单不与其他任何优惠（满减、优惠券、赠品）同享。", "promotion_inquiry"),
        ("赠品怎么领？", "活动期间订单满足条件时赠品会自动加入订单，无需备注；退货时赠品需一并退回。", "promotion_inquiry"),
        ("优惠券怎么用？", "在结算页填写券码即可：SLHW30满200减30（11月30日前有效），新人券NEW10满99减10（新会员首单）。", "promotion_inquiry"),
        ("双11活动到什么时候？", "双11跨店满减、羽绒服八五折、满499赠保温杯均到11月30日23:59:59结束；双12满减12月1日开始。", "promotion_inquiry"),
        ("买了以后降价了能补差价吗？", "支持价保：付款后15天内本店同款降价可申请补差价；秒杀、赠品和优惠券抵扣的部分不参与价保。", "price_inquiry"),
        ("7天无理由退货怎么申请？", "签收后7天内在订单页申请退货，商品需吊牌完好、不影响二次销售，非质量问题退回运费由买家承担。", "return_request"),
        ("哪些商品不支持7天无理由？", "已拆封或穿着过的袜子、拆封的速干内裤等贴身衣物、团体定制刺绣冲锋衣、激光刻字定制保温杯不支持7天无理由退货，质量问题除外。", "return_request"),
        ("换货有时间限制吗？", f"签收后{pol['冲锋衣']['exchange_days']}天内可换货（登山鞋{pol['登山鞋']['exchange_days']}天），需吊牌完好未洗涤。", "exchange_request"),
        ("退款多久到账？", "退货仓库签收后1-3个工作日内审核并原路退回，银行卡到账时间以银行为准。", "refund_status"),
        ("保修多久？", "冲锋衣、羽绒服、登山鞋、帐篷、睡袋、保温杯保修365天，双肩包和登山杖730天，抓绒衣和徒步鞋180天，速干T恤、帽子、手套90天，袜子不保修。", "repair_request"),
        ("维修怎么寄？", f"请寄到{SHOP_ADDRESS}，包裹内附纸条写明订单号和问题，保修期内免费维修，维修周期约7-15天。", "repair_request"),
        ("能开发票吗？", "可以开电子普通发票，抬头可选个人或单位（单位需提供税号），确认收货后24小时内发送到您的邮箱。", "invoice"),
        ("可以开专票吗？", "可以开增值税专用发票，需提供单位名称、税号、地址电话、开户行及账号，开票后寄出纸质发票。", "invoice"),
        ("快递一直不更新怎么办？", "停滞超过24小时我们会向快递催件，超过48小时升级物流专员处理。", "logistics_delay"),
        ("快递丢了怎么办？", "我们会向快递提交丢件核查，1-3个工作日出结果，确认丢件后为您补发或全额退款。", "logistics_lost"),
        ("收到的商品破损怎么办？", "签收后7天内请拍外包装和商品破损照片联系客服，运费由我们承担，换新或退款任选。", "logistics_damaged"),
        ("发货后还能改地址吗？", "待发货订单可以直接修改；已发货订单我们会尝试联系快递改派，但不保证成功，改派费用由买家承担。", "address_change"),
        ("拒收后怎么退款？", "拒收包裹退回仓库签收后1-3个工作日内退款；非质量问题拒收的来回运费需买家承担。", "refused_delivery"),
        ("怎么投诉？", "您可以直接在聊天中说明问题，我们会在24小时内由客服主管回电处理。", "complaint"),
        ("怎么转人工？", "在对话中发送“人工”或“转人工”即可，人工客服在线时间为9:00-24:00。", "human_handoff"),
        ("客服几点上班？", "人工客服每天9:00-24:00在线，其余时间可留言，上班后第一时间回复。", "greeting"),
        ("有会员积分吗？", "每消费1元积1分，100积分可抵1元，积分在确认收货后到账。", "other"),
    ]
    return [{"question": q, "answer": a, "intent": i} for q, a, i in faq]


# ----------------------------------------------------------------------------------------------------------------
# Dialogues
# ----------------------------------------------------------------------------------------------------------------
TYPOS = [("的", "得"), ("在", "再"), ("吗", "嘛"), ("哪", "那"), ("冲锋衣", "冲峰衣"), ("已经", "以经"), ("快递", "快的"),
         ("怎么", "咋么"), ("尺码", "尺吗"), ("退货", "推货"), ("羽绒服", "羽绒副"), ("谢谢", "谢谢谢")]
EMOJI = ["😊", "🙏", "😭", "👍", "😂", "[微笑]", "[捂脸]", "😡", "🤔", "[玫瑰]"]
USER_HI = ["在吗", "你好", "您好，在吗？", "亲 在不在", "hi", "客服在吗", "有人吗", "你好 在吗", "hello", "在不在呀"]
AGENT_HI = ["亲，您好，欢迎光临山岚户外旗舰店，请问有什么可以帮您？", "您好~ 我是客服小岚，很高兴为您服务😊",
            "亲，在的哦，请问有什么可以帮到您？", "您好，山岚户外客服为您服务，请问您想咨询什么呢？", "在的亲，您请说~"]
USER_BYE = ["好的谢谢", "ok", "嗯嗯 知道了", "谢啦👍", "行吧", "好的，麻烦了", "明白了 谢谢", "好 我等消息", "收到", "好滴"]
AGENT_BYE = ["不客气哦亲，还有其他可以帮您的吗？", "祝您生活愉快，有问题随时找小岚哦~", "感谢您的支持，祝您出行愉快！",
             "不客气，欢迎下次光临🌲", "好的亲，有任何问题随时联系我们~"]
WEIGHTS = {
    "product_inquiry": 26, "size_recommendation": 24, "product_recommendation": 20, "stock_inquiry": 18,
    "price_inquiry": 18, "promotion_inquiry": 44, "payment": 14, "order_status": 22, "logistics_tracking": 20,
    "logistics_delay": 18, "logistics_lost": 12, "logistics_damaged": 14, "address_change": 16,
    "refused_delivery": 12, "return_request": 26, "exchange_request": 18, "refund_status": 14, "repair_request": 12,
    "invoice": 14, "complaint": 14, "human_handoff": 12, "greeting": 10, "other": 12,
}


class Writer:
    """Builds the dialogues from the knowledge so agent answers agree with it."""

    def __init__(self, rng: random.Random, products: list[Product], promos: list[dict], orders: list[dict],
                 policies: list[dict], playbooks: list[dict]):
        self.r = rng
        self.pii = Pii(rng)
        self.products = products
        self.by_sku = {p.sku: p for p in products}
        self.promos = promos
        self.orders = orders
        self.policy = {p["category"]: p for p in policies}
        self.playbook = {p["type"]: p for p in playbooks}
        self.when = NOW
        self.refs: dict[str, Any] = {}

    # ---- small helpers ------------------------------------------------------------------------------------------
    def c(self, *options: str) -> str:
        return self.r.choice(options)

    def mention(self, p: Product) -> str:
        r = self.r.random()
        if r < 0.35 and p.aliases:
            return self.r.choice(p.aliases)
        if r < 0.5:
            return p.sku
        if r < 0.6:
            return f"{p.sku} {p.name}"
        return p.name

    def ref_sku(self, *ps: Product) -> None:
        for p in ps:
            self.refs.setdefault("skus", [])
            if p.sku not in self.refs["skus"]:
                self.refs["skus"].append(p.sku)

    def pick(self, cat: str | None = None, cats: set[str] | None = None, where=None) -> Product:
        pool = [p for p in self.products if (cat is None or p.category == cat) and (cats is None or p.category in cats)
                and (where is None or where(p))]
        return self.r.choice(pool)

    def at_random_day(self, lo: int = 1, hi: int = 26) -> datetime:
        return datetime(2026, 11, self.r.randrange(lo, hi + 1), self.r.randrange(9, 24), self.r.randrange(60),
                        tzinfo=TZ)

    def order_time(self, order: dict) -> datetime:
        earliest = max(NOW - timedelta(hours=20), datetime.fromisoformat(order["created_at"]) + timedelta(minutes=10))
        span = int((NOW - earliest).total_seconds() // 60)
        return earliest + timedelta(minutes=self.r.randrange(0, max(span, 1)))

    def orders_where(self, fn) -> list[dict]:
        return [o for o in self.orders if fn(o)]

    def use_order(self, fn) -> dict:
        o = self.r.choice(self.orders_where(fn))
        self.when = self.order_time(o)
        self.refs["order_no"] = o["order_no"]
        return o

    def order_items(self, o: dict) -> list[tuple[Product, int, int]]:
        return [(self.by_sku[i["sku"]], i["quantity"], i["unit_price_fen"]) for i in o["items"]]

    def paid_items(self, o: dict) -> list[Product]:
        return [self.by_sku[i["sku"]] for i in o["items"] if i["unit_price_fen"] > 0]

    def signed_at(self, o: dict) -> datetime | None:
        if not o["shipment"]:
            return None
        for e in o["shipment"]["events"]:
            if e["status"] == "已签收":
                return datetime.fromisoformat(e["time"])
        return None

    def last_event(self, o: dict) -> dict:
        return o["shipment"]["events"][-1]

    def give_order(self, o: dict) -> str:
        """How a customer identifies an order: its number, sometimes with phone or tracking."""
        no = o["order_no"]
        r = self.r.random()
        if r < 0.45:
            return self.c(f"订单号{no}", f"订单号：{no}", f"单号 {no}", f"{no}", f"我的订单是{no}")
        if r < 0.7:
            return self.c(f"订单{no}，手机号{self.pii.mobile()}", f"{no} 下单手机{self.pii.mobile()}")
        if r < 0.85 and o["shipment"]:
            return self.c(f"快递单号{o['shipment']['tracking_no']}", f"运单号是{o['shipment']['tracking_no']}")
        return self.c(f"订单号是{no[:8]} {no[8:]}", f"{no}这个订单")

    def money_said(self, fen: int) -> str:
        y = fen // 100
        if fen % 100:
            return yuan(fen)
        return self.c(f"¥{y}", f"{y}元", f"{y}块", f"{y}.00", f"{y}块钱")

    def explain(self, res: dict) -> str:
        parts = []
        for promo, saving, note in res["steps"]:
            t = promo["type"]
            if t == "discount":
                rate = RATE_CN.get(promo["rate_percent"], f"{promo['rate_percent']}%")
                parts.append(f"{promo['name']}" + ("" if rate in promo["name"] else f"（{rate}）") + f"优惠{yuan(saving)}")
            elif t == "full_reduction":
                parts.append(f"{promo['name']}（{note}）减{yuan(saving)}")
            elif t == "per_full_reduction":
                parts.append(f"{promo['name']}（{note}）减{yuan(saving)}")
            elif t == "coupon":
                parts.append(f"用券{promo['code']}减{yuan(saving)}")
        gifts = "，".join(f"另赠{self.by_sku[s].name}×{q}" for s, q in res["gifts"])
        body = f"商品合计{yuan(res['subtotal'])}"
        if parts:
            body += "，" + "，".join(parts)
        body += f"，实付{yuan(res['total'])}"
        if not any(s[0]["type"] in ("full_reduction", "per_full_reduction") for s in res["steps"]):
            for promo in self.promos:
                if (promo["type"] == "full_reduction" and promo["eligible"].get("all") and promo_active(promo, self.when)
                        and not any(s[0]["exclusive"] for s in res["steps"])):
                    base = res["subtotal"] - sum(sv for pr, sv, _ in res["steps"] if pr["type"] == "discount")
                    need = promo["tiers"][0]["threshold_fen"] - base
                    if need > 0:
                        body += (f"（还差{yuan(need)}可享{promo['name']}满{yuan_num(promo['tiers'][0]['threshold_fen'])}"
                                 f"减{yuan_num(promo['tiers'][0]['reduction_fen'])}）")
        if gifts:
            body += "，" + gifts
        return body

    def note_cart(self, cart: Cart, codes: tuple[str, ...]) -> None:
        """Record the priced cart in meta.refs so tests can recompute the answer from the knowledge files."""
        self.refs["cart"] = [[p.sku, q] for p, q in cart.lines]
        self.refs["codes"] = list(codes)

    def cart_said(self, cart: Cart) -> str:
        out = []
        for p, q in cart.lines:
            m = self.mention(p)
            out.append(m if q == 1 else self.c(f"{m}×{q}", f"{q}件{m}", f"{m} {q}个"))
        return self.c("、", "和", "，", " + ").join(out)

    # ---- intents ------------------------------------------------------------------------------------------------
    def product_inquiry(self) -> list[list[str]]:
        p = self.pick()
        self.ref_sku(p)
        self.when = self.at_random_day()
        m = self.mention(p)
        qa = []
        asks = self.r.sample(["material", "colors", "sizes", "desc", "brand"], 2 if self.r.random() < 0.6 else 1)
        for a in asks:
            if a == "material":
                qa.append((self.c(f"{m}是什么面料的", f"请问{m}什么材质", f"{m}的材料是啥", f"这个{m}面料怎么样"),
                           f"亲，{p.name}采用{p.material}，{p.description}。"))
            elif a == "colors":
                qa.append((self.c(f"{m}有几个颜色", f"{m}除了{p.colors[0]}还有别的颜色吗", "有哪些颜色可以选"),
                           f"{p.name}目前有{'、'.join(p.colors)}{len(p.colors)}个颜色可选哦。"))
            elif a == "sizes":
                sz = "、".join(p.sizes) if p.sizes else "均码"
                qa.append((self.c(f"{m}有哪些尺码", "尺码齐吗", f"{m}有大码吗"),
                           f"{p.name}的尺码有：{sz}。" + ("" if p.sizes else "") + self.c("", "不确定尺码的话可以告诉我身高体重帮您推荐~")))
            elif a == "desc":
                qa.append((self.c(f"{m}适合什么场景", f"{m}保暖/防水怎么样", f"介绍下{m}", f"{m}适合{p.style}吗"),
                           f"{p.name}属于{p.style}款，{p.description}，面料是{p.material}。"))
            else:
                qa.append((self.c(f"{m}是你们自己的牌子吗", "这个是正品吗"),
                           f"是的亲，{p.name}是{p.brand}品牌正品，本店为官方旗舰店，支持专柜验货。"))
        msgs = []
        if self.r.random() < 0.3:
            msgs += [["user", self.c(*USER_HI)], ["assistant", self.c(*AGENT_HI)]]
        for q, a in qa:
            msgs += [["user", q], ["assistant", a]]
        if self.r.random() < 0.15:
            code = "69" + "".join(self.r.choice("0123456789") for _ in range(11))
            msgs += [["user", self.c(f"吊牌上条码是{code}，是{p.sku}这款吗", f"我看到的商品编码{p.sku}，条形码{code}，对得上吗")],
                     ["assistant", f"是的亲，{p.sku}就是{p.name}，条码以实物吊牌为准哦。"]]
        if self.r.random() < 0.3:
            msgs += [["user", self.c(f"那{yuan_num(p.price_fen)}这个价格还有优惠吗", f"价格是{self.money_said(p.price_fen)}对吧",
                                     f"我2026-11-11那天看是{self.money_said(p.price_fen)}，现在还有优惠吗")],
                     ["assistant", self._price_answer(p)]]
        msgs += [["user", self.c(*USER_BYE)]]
        if self.r.random() < 0.6:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    def _price_answer(self, p: Product) -> str:
        res = best_price(Cart([(p, 1)]), self.promos, self.when)
        if res["total"] == p.price_fen and not res["gifts"]:
            return f"{p.name}的价格是{yuan(p.price_fen)}，目前单件没有可用的活动哦，满足店铺满减门槛可以一起凑单~"
        return f"{p.name}标价{yuan(p.price_fen)}，{cn_date(self.when)}下单按当前活动：{self.explain(res)}。"

    def size_recommendation(self) -> list[list[str]]:
        kind = self.c("men", "men", "women", "shoes", "shoes", "kids")
        self.when = self.at_random_day()
        msgs: list[list[str]] = []
        if kind in ("men", "women"):
            women = kind == "women"
            p = self.pick(cats=CLOTHING, where=lambda x: (x.sizes == W_CLOTH.split("|")) == women and x.sizes
                          and x.sizes[0] in ("S", "XS"))
            h = self.r.randrange(152, 176) if women else self.r.randrange(160, 192)
            w = self.r.randrange(42, 70) if women else self.r.randrange(55, 98)
            m = self.mention(p)
            if self.r.random() < 0.25 and not women:
                hao = {165: "165/88A", 170: "170/92A", 175: "175/96A", 180: "180/100A", 185: "185/104A"}
                hh = self.r.choice(sorted(hao))
                h, w = hh, None
                q = self.c(f"我平时穿{hao[hh]}，{m}选哪个码", f"{hao[hh]}的穿{m}什么码")
            else:
                q = self.c(f"{h}cm {w}kg 穿{m}什么码", f"身高{h}，体重{w}公斤，{m}要选多大的", f"我{h} {w*2}斤，{m}选哪个码",
                           f"{m}，{h}/{w}kg 推荐下尺码")
            size = cloth_size(h, w, women)
            a = f"亲，按您的身高{h}cm" + (f"、体重{w}kg" if w else "") + f"，{p.name}建议选{size}码。"
            if w and w > h - 100 + 8:
                a += "因为体重偏上，已经帮您往大推了一码。"
            if p.category == "冲锋衣" and "三合一" in p.name:
                a += self.c("三合一版型本身留了内搭空间，正常选码就好。", "如果里面想穿厚毛衣，可以考虑再大一码。")
            msgs += [["user", q], ["assistant", a]]
            if size not in p.sizes:
                msgs[-1][1] += f"不过这款最大只到{p.sizes[-1]}，建议您看下其他款哦。"
            if self.r.random() < 0.5:
                c = self.r.choice(p.colors)
                msgs += [["user", self.c(f"{c}的{size}有货吗", f"那{size} {c}还有吗")],
                         ["assistant", self._stock_answer(p, c, size)]]
            self.ref_sku(p)
        elif kind == "shoes":
            p = self.pick(cats=SHOES, where=lambda x: len(x.sizes) > 3)
            daily = self.r.choice([int(s) for s in p.sizes[:-1]])
            m = self.mention(p)
            if self.r.random() < 0.5:
                foot = (daily + 10) * 5
                q = self.c(f"脚长{foot}mm，{m}穿多大", f"我脚长{foot / 10:g}厘米，{m}选几码")
                a = f"脚长{foot}mm对应日常{daily}码（{foot}÷5−10={daily}），{p.name}建议大一码，选{shoe_size(daily)}码，方便穿厚袜子。"
            else:
                q = self.c(f"平时穿{daily}的鞋，{m}要买多大", f"{m} 我一般{daily}码 偏瘦脚", f"{daily}码的脚 {m}拿几码合适")
                a = f"亲，{p.category}建议比日常大一码，您平时穿{daily}码的话{p.name}建议选{shoe_size(daily)}码哦。"
            if str(shoe_size(daily)) not in p.sizes:
                a += f"这款尺码是{p.sizes[0]}-{p.sizes[-1]}，{shoe_size(daily)}码暂无，建议选{p.sizes[-1]}码。"
            msgs += [["user", q], ["assistant", a]]
            if self.r.random() < 0.5:
                msgs += [["user", self.c("会不会太大啊", "大一码不会掉跟吗", "宽脚也这样选吗")],
                         ["assistant", self.c("徒步下坡时脚会前移，大一码刚好不顶脚，系紧鞋带就不会掉跟的~",
                                              "宽脚的亲可以放心，这款楦型偏宽；如果收到不合适，签收15天内可以换码哦。")]]
            self.ref_sku(p)
        else:
            p = next(x for x in self.products if x.name == "儿童三合一冲锋衣")
            h = self.r.randrange(100, 150)
            q = self.c(f"孩子{h}cm，{self.mention(p)}买多大", f"儿童冲锋衣 小孩身高{h} 选哪个码", f"我家宝宝{h}公分 穿什么码")
            a = f"儿童款尺码就是适合的身高，建议选比孩子身高大5cm以上的最小尺码，{h}cm选{kids_size(h)}码，能多穿一两年。"
            msgs += [["user", q], ["assistant", a]]
            self.ref_sku(p)
        msgs += [["user", self.c(*USER_BYE, "好的那我下单了")]]
        if self.r.random() < 0.7:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        if self.r.random() < 0.3:
            msgs = [["user", self.c(*USER_HI)], ["assistant", self.c(*AGENT_HI)]] + msgs
        return msgs

    def _stock_answer(self, p: Product, color: str, size: str | None) -> str:
        what = f"{p.name} {color}" + (f" {size}" if size else "")
        if p.stock == 0:
            return f"抱歉亲，{p.name}目前全部缺货，补货时间还没确定，您可以先收藏并点“到货通知”哦。"
        if p.stock < 10:
            return f"{what}目前有货，不过这款总库存只剩{p.stock}件了，喜欢的话建议尽快下单~"
        return f"有货的亲，{what}可以正常下单，付款后48小时内发货。"

    def product_recommendation(self) -> list[list[str]]:
        self.when = self.at_random_day()
        cat = self.r.choice(CATEGORIES)
        pool = [p for p in self.products if p.category == cat and "定制" not in p.name and "套装" not in p.name]
        prices = sorted(p.price_fen for p in pool)
        budget = self.r.choice([prices[0] + 5000, prices[len(prices) // 2] + 10000, prices[-1] + 20000, prices[0] - 2000])
        budget = max(5000, budget // 10000 * 100 * 100 or 5000)
        scene = self.c("平时上班穿", "周末爬爬山", "去川西徒步", "冬天去东北", "带孩子露营", "想去爬雪山", "送男朋友",
                       "自己城市里通勤用")
        q = self.c(f"想买个{cat}，预算{budget // 100}以内，{scene}，有推荐吗", f"{scene}，{cat}推荐哪款？{budget // 100}块以内",
                   f"推荐一款{cat}吧 预算{self.money_said(budget)}左右 {scene}")
        fit = sorted([p for p in pool if p.price_fen <= budget], key=lambda p: -p.price_fen)
        if fit:
            top = fit[:2]
            self.ref_sku(*top)
            a = "亲，按您的预算推荐：" + "；".join(f"{p.name}（{p.sku}），{yuan(p.price_fen)}，{p.style}款，{p.description}"
                                             for p in top) + "。"
        else:
            cheapest = min(pool, key=lambda p: p.price_fen)
            self.ref_sku(cheapest)
            a = f"亲，{budget // 100}元以内暂时没有合适的{cat}，最入门的是{cheapest.name}，{yuan(cheapest.price_fen)}，{cheapest.description}。"
        msgs = [["user", q], ["assistant", a]]
        if fit and len(fit) > 1 and self.r.random() < 0.6:
            x, y = fit[0], fit[1]
            msgs += [["user", self.c(f"这两个有啥区别", f"{x.sku}和{y.sku}选哪个好", "哪个性价比高")],
                     ["assistant", f"{x.name}是{x.material}，{x.description}；{y.name}是{y.material}，{y.description}。"
                                   f"{'更看重性能选前者' if x.price_fen > y.price_fen else '两款价格一样看喜好'}，预算紧一点选{y.name}就够用了。"]]
        if fit and self.r.random() < 0.5:
            msgs += [["user", self.c("现在买有优惠吗", "有活动吗现在", "能便宜点不")], ["assistant", self._price_answer(fit[0])]]
        msgs += [["user", self.c(*USER_BYE, "我再看看", "那就第一个吧")]]
        if self.r.random() < 0.6:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    def stock_inquiry(self) -> list[list[str]]:
        self.when = self.at_random_day()
        p = self.pick(where=lambda x: x.stock < 10) if self.r.random() < 0.45 else self.pick()
        self.ref_sku(p)
        color = self.r.choice(p.colors)
        size = self.r.choice(p.sizes) if p.sizes else None
        m = self.mention(p)
        q = self.c(f"{m} {color} {size or ''} 有货吗", f"{color}的{m}还有{size or ''}吗", f"请问{m}{size or ''}{color}有现货吗？",
                   f"{m}现在有货没").replace("  ", " ")
        msgs = [["user", q], ["assistant", self._stock_answer(p, color, size)]]
        if p.stock > 0 and self.r.random() < 0.6:
            n = self.c(2, 3, 5, 12, 20)
            if n <= p.stock:
                a = f"可以的亲，{n}件没问题，直接拍{n}件就行。"
            else:
                a = f"抱歉，这款目前只剩{p.stock}件，最多只能拍{p.stock}件哦。"
            msgs += [["user", self.c(f"我要买{n}件够吗", f"能拍{n}个吗", f"公司团购要{n}件有吗")], ["assistant", a]]
        if p.stock > 0 and self.r.random() < 0.4:
            msgs += [["user", self.c("今天下单什么时候发", "啥时候能发货")],
                     ["assistant", "现货订单付款后48小时内从杭州仓发出，双11期间可能会延迟到72小时，请您谅解~"]]
        msgs += [["user", self.c(*USER_BYE, "那我等补货吧", "好的我下单")]]
        return msgs

    def price_inquiry(self) -> list[list[str]]:
        self.when = self.at_random_day()
        scenario = self.r.random()
        if scenario < 0.55:
            p = self.pick()
            self.ref_sku(p)
            msgs = [["user", self.c(f"{self.mention(p)}多少钱", f"{self.mention(p)}现在什么价", f"{self.mention(p)}到手价多少",
                                    f"请问{self.mention(p)}价格")],
                    ["assistant", self._price_answer(p)]]
            if self.r.random() < 0.5:
                msgs += [["user", self.c("双12会不会更便宜", "过几天会降价吗", "买了降价怎么办", "12月12日会降价不",
                                         f"我会员号{self.pii.not_a_phone()}，买了降价能补吗")],
                         ["assistant", "具体以活动页为准哦，我们支持价保：付款后15天内本店同款降价可申请补差价，秒杀、赠品和优惠券抵扣部分不参与价保。"]]
        elif scenario < 0.8:
            a, b = self.r.sample([p for p in self.products if p.category in CLOTHING | SHOES], 2)
            self.ref_sku(a, b)
            cheaper = a if a.price_fen <= b.price_fen else b
            diff = abs(a.price_fen - b.price_fen)
            msgs = [["user", self.c(f"{a.sku}和{b.sku}哪个便宜", f"{self.mention(a)}跟{self.mention(b)}差多少钱")],
                    ["assistant", f"{a.name}是{yuan(a.price_fen)}，{b.name}是{yuan(b.price_fen)}，"
                                  + (f"{cheaper.name}便宜{yuan(diff)}。" if diff else "两款价格一样。")]]
        else:
            o = self.use_order(lambda o: o["status"] in ("已签收", "已完成") and o["paid_fen"] > 0)
            msgs = [["user", self.c(f"我前几天买的{self.give_order(o)}，现在是不是降价了", f"{self.give_order(o)} 能保价吗")],
                    ["assistant", f"亲，查到您的订单实付{yuan(o['paid_fen'])}，下单时间{cn_date(datetime.fromisoformat(o['created_at']))}。"
                                  + ("已在付款后15天内，如有同款降价可以申请价保补差价，秒杀和优惠券部分不参与。"
                                     if self.when - datetime.fromisoformat(o["created_at"]) <= timedelta(days=15)
                                     else "很抱歉已经超过付款后15天的价保期，无法申请补差价了。")]]
        msgs += [["user", self.c(*USER_BYE)]]
        if self.r.random() < 0.5:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    def promotion_inquiry(self) -> list[list[str]]:
        scenario = self.c("cart", "cart", "cart", "stack", "coupon", "validity", "exclusive", "gift", "discount")
        pid = {p["id"]: p for p in self.promos}
        msgs: list[list[str]] = []
        if scenario == "cart":
            self.when = self.at_random_day()
            lines = [(p, self.c(1, 1, 1, 2)) for p in self.r.sample([x for x in self.products if "定制" not in x.name],
                                                                     self.c(1, 2, 2, 3))]
            cart = Cart(lines)
            self.ref_sku(*[p for p, _ in lines])
            res = best_price(cart, self.promos, self.when)
            self.refs["promotions"] = [s[0]["id"] for s in res["steps"]]
            self.refs["total_fen"] = res["total"]
            self.note_cart(cart, ())
            q = self.c(f"我想买{self.cart_said(cart)}，满减怎么算？一共多少钱", f"{self.cart_said(cart)} 到手多少",
                       f"买{self.cart_said(cart)}能用满300减50吗", f"算一下{self.cart_said(cart)}的价格呗")
            msgs = [["user", q], ["assistant", f"亲，帮您算了一下（按{cn_date(self.when)}的活动）：{self.explain(res)}。"
                                                + self.c("", "实际以结算页为准哦~", "活动叠加顺序是折扣→满减→优惠券。")]]
            if self.r.random() < 0.4 and res["steps"]:
                msgs += [["user", self.c("怎么算的 没看懂", "为啥不是减更多", "能再便宜点吗")],
                         ["assistant", "同一叠加组的活动只能享一个，系统已自动按最优惠的组合计算；店铺满减按折后金额判断门槛，最高档只减一次。"]]
        elif scenario == "stack":
            self.when = self.at_random_day(15, 26)
            smalls = [x for x in self.products if promo_eligible(pid["P002"], x)]
            lines = [(p, self.c(1, 2, 3)) for p in self.r.sample(smalls, self.c(2, 3))]
            cart = Cart(lines)
            self.ref_sku(*[p for p, _ in lines])
            a = apply_combo(cart, [pid["P001"]])
            b = apply_combo(cart, [pid["P002"]])
            best = best_price(cart, self.promos, self.when)
            self.refs["promotions"] = ["P001", "P002"]
            self.refs["total_fen"] = best["total"]
            self.note_cart(cart, ())
            q = self.c(f"满300减50和每满200减20能一起用吗？我买{self.cart_said(cart)}", f"每满200减20能叠加满减吗 买{self.cart_said(cart)}",
                       "两个满减可以叠加吗")
            ans = (f"亲，双11满300减50和户外小件每满200减20同属店铺满减组，不能叠加，只享其中更优惠的一个哦。"
                   f"您这单合计{yuan(cart.subtotal)}：用满300减50{'减' + yuan(a['subtotal'] - a['total']) if a['total'] < a['subtotal'] else '不够门槛'}，"
                   f"用每满200减20{'减' + yuan(b['subtotal'] - b['total']) if b['total'] < b['subtotal'] else '不够门槛'}，"
                   f"系统会自动选更优的，最终{self.explain(best)}。")
            msgs = [["user", q], ["assistant", ans]]
        elif scenario == "coupon":
            self.when = self.at_random_day()
            code = self.c("SLHW30", "NEW10")
            promo = next(p for p in self.promos if p.get("code") == code)
            p = self.pick(where=lambda x: "定制" not in x.name)
            cart = Cart([(p, self.c(1, 1, 2))])
            self.ref_sku(p)
            without = best_price(cart, self.promos, self.when)
            with_ = best_price(cart, self.promos, self.when, (code,))
            self.refs["promotions"] = [s[0]["id"] for s in with_["steps"]]
            self.refs["total_fen"] = with_["total"]
            self.note_cart(cart, (code,))
            used = any(s[0]["id"] == promo["id"] for s in with_["steps"])
            q = self.c(f"我有个券{code}，买{self.cart_said(cart)}能用吗", f"领的{promo['description'][-11:]}能和满减一起用不？买{self.cart_said(cart)}",
                       f"优惠券{code}怎么用")
            if used:
                ans = (f"可以的亲，{promo['name']}（满{yuan_num(promo['threshold_fen'])}减{yuan_num(promo['reduction_fen'])}）和店铺满减、品类折扣可以叠加，"
                       f"在满减之后使用：{self.explain(with_)}。")
            elif any(s[0]["exclusive"] for s in with_["steps"]):
                ans = f"抱歉亲，这件商品参加的是秒杀独享活动，不能再用{code}券，{self.explain(with_)}。"
            else:
                ans = (f"亲，{code}券需要满减后金额满{yuan(promo['threshold_fen'])}才能用，您这单{self.explain(without)}，还不够用券门槛，"
                       f"再凑{yuan(promo['threshold_fen'] - without['total'])}就可以用了哦。")
            if code == "NEW10":
                ans += "另外NEW10是新会员首单专享。"
            msgs = [["user", q], ["assistant", ans]]
        elif scenario == "validity":
            p = self.r.choice([pid["P009"], pid["P011"], pid["P008"], pid["P012"], pid["P001"], pid["P003"]])
            self.when = self.at_random_day()
            self.refs["promotions"] = [p["id"]]
            s, e = datetime.fromisoformat(p["starts_at"]), datetime.fromisoformat(p["ends_at"])
            q = self.c(f"{p['name']}还有吗", f"{p['description'][:12]}那个活动什么时候", f"{p['name']}现在还能参加不",
                       f"请问{p['name']}到几号")
            if e < self.when:
                ans = (f"亲，{p['name']}（{p['description']}）活动时间是{s.year}年{cn_date(s)}到{cn_date(e)}，已经结束了哦。"
                       "现在可以参加双11跨店满减（满300减50，满600减120），11月30日截止。")
            elif s > self.when:
                ans = f"{p['name']}还没开始哦，活动时间{s.year}年{cn_date(s)}{s.hour:02d}:00到{cn_date(e)}23:59，内容是{p['description']}，可以先加购物车~"
            else:
                ans = f"{p['name']}正在进行中，{p['description']}，活动到{cn_date(e)}23:59:59结束，抓紧时间哦~"
            msgs = [["user", q], ["assistant", ans]]
        elif scenario == "exclusive":
            self.when = self.at_random_day(20, 26)
            p = self.by_sku[self.r.choice(pid["P010"]["eligible"]["skus"])]
            self.ref_sku(p)
            cart = Cart([(p, 1)])
            res = best_price(cart, self.promos, self.when, ("SLHW30",))
            self.refs["promotions"] = [s[0]["id"] for s in res["steps"]]
            self.refs["total_fen"] = res["total"]
            self.note_cart(cart, ("SLHW30",))
            msgs = [["user", self.c(f"秒杀的{self.mention(p)}还能用满减和券吗", f"{self.mention(p)}秒杀价能叠加优惠券不", "秒杀能送保温杯吗",
                                    f"我有SLHW30的券，{self.mention(p)}秒杀能用吗", f"{self.mention(p)}秒杀再叠个满300减50呗")],
                    ["assistant", self.c("亲，", "抱歉亲，", "") + f"帐篷睡袋限时秒杀是独享活动，不与满减、优惠券、赠品同享。"
                                  f"{p.name}秒杀价七折：{self.explain(res)}" + self.c("，已经是最低价啦~", "。", "，秒杀到11月30日结束。")]]
            if self.r.random() < 0.5:
                msgs += [["user", self.c("那我不用秒杀 用满减呢", "不参加秒杀会更便宜吗")],
                         ["assistant", "不参加秒杀的话按双11满减算："
                                       + self.explain(apply_combo(cart, [x for x in self.promos if x["id"] in ("P001", "P005")
                                                                         and promo_active(x, self.when)])) + "，"
                                       "还是秒杀更划算哦。"]]
        elif scenario == "gift":
            self.when = self.at_random_day(1, 26)
            p = self.pick(where=lambda x: 30000 <= x.price_fen < 49900 and x.category not in SHOES)
            q2 = self.pick(where=lambda x: x.price_fen <= 15000)
            self.ref_sku(p, q2)
            one = best_price(Cart([(p, 1)]), self.promos, self.when)
            two = best_price(Cart([(p, 1), (q2, 1)]), self.promos, self.when)
            self.refs["promotions"] = [s[0]["id"] for s in two["steps"]]
            self.refs["total_fen"] = two["total"]
            self.note_cart(Cart([(p, 1), (q2, 1)]), ())
            msgs = [["user", self.c(f"满499送保温杯，我买{self.mention(p)}有吗", f"送杯子的活动怎么参加，买{self.mention(p)}够不够")],
                    ["assistant", f"亲，满499赠保温杯按折后商品金额计算，{p.name}单买：{self.explain(one)}"
                                  + ("，已经满足，赠品会自动加到订单里。" if one["gifts"] else "，还不够赠品门槛哦。")],
                    ["user", self.c(f"那加一个{self.mention(q2)}呢", f"再加{self.mention(q2)}够了吧")],
                    ["assistant", f"加上{q2.name}：{self.explain(two)}。" + ("" if two["gifts"] else "赠品门槛还是没到哦~")]]
        else:
            self.when = self.at_random_day(10, 26)
            cat = self.c("羽绒服", "冲锋衣")
            p = self.pick(cat=cat, where=lambda x: "定制" not in x.name)
            n = self.c(1, 2, 3) if cat == "冲锋衣" else 1
            cart = Cart([(p, n)])
            self.ref_sku(p)
            res = best_price(cart, self.promos, self.when)
            self.refs["promotions"] = [s[0]["id"] for s in res["steps"]]
            self.refs["total_fen"] = res["total"]
            self.note_cart(cart, ())
            rule = "羽绒服全场八五折" if cat == "羽绒服" else "冲锋衣九折，每单限前2件"
            msgs = [["user", self.c(f"{cat}现在打几折", f"{self.mention(p)}买{n}件打折吗", f"{cat}有折扣吗 买{n}件")],
                    ["assistant", f"亲，目前{rule}，折后还能参加店铺满减。{p.name}×{n}：{self.explain(res)}。"]]
        if self.r.random() < 0.35:
            msgs = [["user", self.c(*USER_HI)], ["assistant", self.c(*AGENT_HI)]] + msgs
        msgs += [["user", self.c(*USER_BYE, "明白了", "好的我去下单")]]
        if self.r.random() < 0.5:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    def payment(self) -> list[list[str]]:
        scenario = self.c("fail", "pending", "installment", "methods", "card")
        if scenario == "pending":
            o = self.use_order(lambda o: o["status"] == "待付款")
            msgs = [["user", self.c(f"我付了钱怎么还显示待付款 {self.give_order(o)}", f"{self.give_order(o)} 支付宝扣款了 订单没变")],
                    ["assistant", f"亲，系统显示订单{o['order_no']}目前还是待付款状态，没有收到款项。请在支付宝/微信账单里确认是否扣款，"
                                  "已扣款未到账的一般30分钟内会自动同步~"],
                    ["user", self.c("账单里显示扣了", "扣了的 我截图给你 [图片]")],
                    ["assistant", "收到，已为您提交支付异常核查，若30分钟后仍未同步，扣款会在1-3个工作日内原路退回，届时您可以重新下单。"]]
        elif scenario == "installment":
            self.when = self.at_random_day()
            p = self.pick(where=lambda x: x.price_fen >= 30000)
            self.ref_sku(p)
            msgs = [["user", self.c(f"{self.mention(p)}能分期吗", "可以花呗分期吗", "支持信用卡分期不")],
                    ["assistant", f"可以的亲，订单满300元支持花呗3期免息，{p.name}{yuan(p.price_fen)}满足条件，在支付页选择花呗分期即可。"]]
        elif scenario == "methods":
            self.when = self.at_random_day()
            msgs = [["user", self.c("能货到付款吗", "可以用微信付吗", "能用云闪付吗")],
                    ["assistant", "亲，支持支付宝、微信支付、银联云闪付和信用卡，暂不支持货到付款哦。"]]
        elif self.r.random() < 0.3:
            self.when = self.at_random_day()
            name, idc = self.pii.name(), self.pii.id_card()
            msgs = [["user", self.c(f"支付宝提示要实名认证，我叫{name}，身份证{idc}，你帮我弄下", f"实名认证不过 {name} {idc}")],
                    ["assistant", "亲，实名认证是在支付宝/微信里完成的，我们店铺这边看不到也不需要您的身份证号，请不要在聊天中发送哦。"]]
        else:
            self.when = self.at_random_day()
            card = self.pii.bank_card()
            msgs = [["user", self.c(f"银行卡付款一直失败 卡号{card}", f"我用{card}这张卡付不了款", f"绑的卡 {card} 提示支付失败")],
                    ["assistant", "亲，为了您的资金安全，请不要在聊天里发送完整银行卡号哦。支付失败一般是卡片限额或网络问题，建议换一张卡或改用支付宝/微信支付。"]]
            if self.r.random() < 0.5:
                msgs += [["user", self.c("限额是多少", "是不是你们系统问题")],
                         ["assistant", "限额由发卡银行设定，您可以拨打银行客服查询；我们这边支付通道是正常的哦。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        if self.r.random() < 0.5:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    def _status_answer(self, o: dict) -> str:
        st = o["status"]
        no = o["order_no"]
        if st == "待付款":
            return f"亲，订单{no}目前是待付款状态，付款后48小时内发货；优惠以付款时的活动为准哦。"
        if st == "待发货":
            return f"订单{no}已付款{yuan(o['paid_fen'])}，目前待发货，仓库正在打包，付款后48小时内发出。"
        if st in ("已发货", "已签收", "已完成", "退款中"):
            sh = o["shipment"]
            e = self.last_event(o)
            t = datetime.fromisoformat(e["time"])
            head = {"已发货": "已发货", "已签收": "已签收", "已完成": "已完成（已确认收货）", "退款中": "退款中"}[st]
            return (f"订单{no}目前{head}，{sh['carrier']}单号{sh['tracking_no']}，最新物流：{cn_datetime(t)} {e['status']}（{e['location']}）。")
        return f"订单{no}已取消，没有产生扣款哦。"

    def order_status(self) -> list[list[str]]:
        o = self.use_order(lambda o: True)
        msgs = [["user", self.c(f"帮我查下订单 {self.give_order(o)}", f"{self.give_order(o)} 到哪了", f"我的订单怎么样了，{self.give_order(o)}",
                                f"{self.give_order(o)}这个单什么状态")],
                ["assistant", self._status_answer(o)]]
        if o["status"] == "待发货" and self.r.random() < 0.6:
            msgs += [["user", self.c("能快点发吗 急用", "今天能发吗")],
                     ["assistant", "已帮您备注加急，仓库会优先处理，具体发货时间以系统为准，付款后最晚48小时内发出。"]]
        elif o["status"] == "已发货" and self.r.random() < 0.5:
            h = (self.when - datetime.fromisoformat(self.last_event(o)["time"])).total_seconds() / 3600
            msgs += [["user", self.c("大概啥时候到", "明天能到吗")],
                     ["assistant", "快递正常运输中，一般3天左右送达，具体以快递派送为准哦。" if h < 24 else
                      f"物流已经{int(h)}小时没有更新了，已为您向{o['shipment']['carrier']}催件，24小时内给您回复处理进度。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        if self.r.random() < 0.5:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    def logistics_tracking(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] in ("已发货", "已签收") and "异常" not in o["shipment"]["events"][-1]["status"])
        sh = o["shipment"]
        e = self.last_event(o)
        t = datetime.fromisoformat(e["time"])
        msgs = [["user", self.c(f"快递到哪了 {self.give_order(o)}", f"{self.give_order(o)}，物流信息帮我看看", f"查物流，{self.give_order(o)}",
                                "我的快递到哪了")]]
        if msgs[0][1] == "我的快递到哪了":
            msgs += [["assistant", "亲，麻烦提供一下订单号或下单手机号，帮您查询~"], ["user", self.give_order(o)]]
        msgs += [["assistant", f"亲，您的包裹由{sh['carrier']}配送，运单号{sh['tracking_no']}，最新状态：{cn_datetime(t)} {e['status']}，{e['location']}。"
                               + ("已经签收了哦，如果没收到请看下门卫或快递柜。" if e["status"] == "已签收" else "")]]
        if e["status"] != "已签收" and self.r.random() < 0.6:
            h = (self.when - t).total_seconds() / 3600
            q = self.c("怎么这么慢", "能改发顺丰吗", "啥时候派送")
            if q == "能改发顺丰吗":
                a = f"抱歉亲，包裹已经由{sh['carrier']}发出，没法再改快递了；下次下单可以在备注里指定顺丰哦。"
            elif h < 24:
                a = "包裹正在正常运输中，一般3天左右送达，具体以快递派送为准~"
            else:
                a = f"物流已有{int(h)}小时没更新，已为您催件，24小时内给您回复，超时未更新可以申请补发或退款。"
            msgs += [["user", q], ["assistant", a]]
        if e["status"] == "已签收" and self.r.random() < 0.5:
            msgs += [["user", self.c("显示签收了但我没收到啊", "我没签收啊 谁签的")],
                     ["assistant", f"亲别着急，显示{e['location']}，麻烦先问下家人/门卫/快递柜；如果还找不到，我们帮您联系{sh['carrier']}核实签收底单，24小时内回复您。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def logistics_delay(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] == "已发货" and "异常" not in o["shipment"]["events"][-1]["status"]
                           and (NOW - datetime.fromisoformat(o["shipment"]["events"][-1]["time"])) > timedelta(hours=40))
        sh = o["shipment"]
        e = self.last_event(o)
        t = datetime.fromisoformat(e["time"])
        h = int((self.when - t).total_seconds() // 3600)
        days = (self.when - datetime.fromisoformat(o["created_at"])).days
        pb = self.playbook["delay"]
        msgs = [["user", self.c(f"下单{days}天了还没到！！{self.give_order(o)}", f"{self.give_order(o)} 物流好几天不动了",
                                f"你们快递怎么回事 {days}天了 {self.give_order(o)}", f"物流一直停在{e['location']}，{self.give_order(o)}")],
                ["assistant", f"非常抱歉让您久等了，查到{sh['carrier']}运单{sh['tracking_no']}最新轨迹停在{cn_datetime(t)}（{e['location']}），"
                              f"已经{h}小时没更新。{pb['allowed_promises'][0]}，{pb['allowed_promises'][1]}。"]]
        if h > pb["escalate_after_hours"]:
            msgs[-1][1] += "因为停滞超过48小时，已升级物流专员跟进，并为您申请了一张10元无门槛券作为补偿。"
        if self.r.random() < 0.6:
            msgs += [["user", self.c("明天能到吗？给个准话", "你保证明天到我就等", "那到底什么时候到")],
                     ["assistant", "很抱歉，具体送达时间要以快递实际派送为准，这边没法向您保证，但我们会持续跟进，" + pb["allowed_promises"][2] + "。"]]
        if self.r.random() < 0.25:
            ll = self.pii.landline()
            msgs += [["user", self.c(f"白天打我单位座机{ll}", f"有消息打{ll}，工作日都在")],
                     ["assistant", "好的，已备注您的座机，有进展第一时间联系您。"]]
        elif self.r.random() < 0.4:
            phone = self.pii.mobile()
            msgs += [["user", self.c(f"有消息打我电话{phone}", f"快递员联系不上我的话打{phone}")],
                     ["assistant", f"好的，已备注联系电话{self.pii.masked_mobile(phone)}，有进展第一时间通知您。"]]
        msgs += [["user", self.c(*USER_BYE, "行吧 尽快", "再不到我就退了")]]
        return msgs

    def logistics_lost(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] == "已发货" and "异常" in o["shipment"]["events"][-1]["status"])
        sh = o["shipment"]
        e = self.last_event(o)
        pb = self.playbook["lost"]
        msgs = [["user", self.c(f"我的快递是不是丢了 {self.give_order(o)}", f"{self.give_order(o)} 物流显示异常 啥情况", f"快递丢了吧？{self.give_order(o)}")],
                ["assistant", f"亲，查到{sh['carrier']}运单{sh['tracking_no']}在{cn_datetime(datetime.fromisoformat(e['time']))}"
                              f"显示“{e['status']}”（{e['location']}）。"
                              f"已为您向快递提交丢件核查，{pb['allowed_promises'][1]}，{pb['allowed_promises'][0]}。"],
                ["user", self.c("那我要补发", "直接退款吧 不想等了", "补发要多久")]]
        if "退款" in msgs[-1][1]:
            msgs += [["assistant", f"好的，确认丢件后为您全额退款{yuan(o['paid_fen'])}，原路退回。"]]
        else:
            msgs += [["assistant", "好的，确认丢件后为您安排补发，补发订单优先顺丰发出，发出后会把新单号同步给您。"]]
        if self.r.random() < 0.3:
            msgs += [["user", f"要不要我身份证号去快递那边报案？{self.pii.id_card()}"],
                     ["assistant", "不需要的亲，丢件核查和索赔都由我们和快递公司处理，请不要在聊天里发送身份证号哦。"]]
        elif self.r.random() < 0.5:
            name, phone = self.pii.name(), self.pii.mobile()
            msgs += [["user", self.c(f"补发还是寄原地址，收件人{name} {phone}", f"联系人{name}，电话{phone}")],
                     ["assistant", f"好的，已记录：{name}，{phone}，地址不变。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def logistics_damaged(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] == "已签收")
        p = self.r.choice(self.paid_items(o))
        self.ref_sku(p)
        signed = self.signed_at(o)
        days = (self.when - signed).days
        damage = self.c(*{
            "保温杯": ["杯子凹了一块", "杯盖裂了", "杯身掉漆了一大块"], "帐篷": ["帐篷杆断了一根", "外帐破了个洞", "地钉少了还弯了"],
            "登山杖": ["登山杖弯了", "杖尖掉了一个"], "双肩包": ["背包划破了", "包上全是黑印子"],
            "徒步鞋": ["鞋盒压扁了，鞋面有折痕", "一只鞋鞋面脏了"], "登山鞋": ["鞋盒压烂了，鞋头有划痕", "鞋带扣掉了一个"],
            "睡袋": ["压缩袋破了，羽绒往外钻", "睡袋上有一块污渍"],
        }.get(p.category, ["外箱压烂了，衣服上有一块油污", "包装破了，拉链头掉了", "盒子破了，东西也脏了", "袋子破了，衣服勾丝了"]))
        m = self.mention(p)
        open_ = self.c(f"收到的{m}{damage}", f"{self.give_order(o)}，{damage}", f"快递送来{damage}，怎么处理", f"刚拆快递 {damage} 气死了",
                       f"你们发的{m}有问题，{damage}", f"{damage}，能换吗", f"签收的包裹{damage}，{self.give_order(o)}")
        msgs = [["user", open_],
                ["assistant", self.c("非常抱歉给您带来不好的体验！麻烦拍一下外包装和商品破损处的照片发给我，帮您登记处理。",
                                     "实在抱歉亲！麻烦您提供一下破损部位和外箱的照片，我这边马上登记。",
                                     "抱歉让您收到有问题的商品，能拍几张照片吗？外包装和破损的地方都拍一下哦。")]]
        if o["order_no"] not in open_ and "单号" not in open_:
            msgs[-1][1] += "另外麻烦提供一下订单号~"
            msgs += [["user", self.give_order(o)]]
        msgs += [["user", self.c("[图片]", "[图片][图片]", "外箱也拍了 [图片]")]]
        if self.r.random() < 0.5:
            msgs += [["user", self.c("[图片]", "就这样 你看", "拍了", "[视频]")]]
        if days <= 7:
            msgs += [["assistant", f"收到照片了，确认是运输破损。您{cn_date(signed)}签收，在7天内，运费由我们承担，"
                                   + self.c("可以为您换新或退货退款，您看选哪种？", "换新或退款您选一个就行。")
                                   + self.c("快递那边的理赔我们来处理，不需要您参与。", "")],
                     ["user", self.c("换新的吧", "退款吧", "换新 尽快发", "直接退钱")],
                     ["assistant", self.c("好的，已为您登记，稍后在订单页提交申请，上门取件运费我们承担，审核通过后为您处理。",
                                          "已登记好了，快递员会上门取件，运费我们出，收到后马上为您处理~")]]
        else:
            pol = self.policy.get(p.category, self.policy["*"])
            msgs += [["assistant", f"收到照片了。您{cn_date(signed)}签收，已超过7天的运输破损反馈期，这边按质量问题售后为您处理，"
                                   + (f"{p.category}可申请维修（保修{pol['repair_days']}天）。" if pol["repair_days"] else "抱歉该品类不提供保修。")]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs[:10]

    def address_change(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] in ("待付款", "待发货", "已发货"))
        name, phone, addr = self.pii.name(), self.pii.mobile(), self.pii.address()
        new = self.c(f"收件人{name}，电话{phone}，地址{addr}", f"{addr} {name} {phone}", f"改成 {addr}，{name}收，手机{phone}",
                     f"改到公司：{addr}，{name}，座机{self.pii.landline()}，手机{phone}")
        msgs = [["user", self.c(f"地址填错了能改吗 {self.give_order(o)}", f"{self.give_order(o)} 我想改下收货地址", "能改地址吗")]]
        if msgs[0][1] == "能改地址吗":
            msgs += [["assistant", "可以的亲，麻烦提供一下订单号~"], ["user", self.give_order(o)]]
        if o["status"] == "待付款":
            msgs += [["assistant", "亲，订单还没付款，您可以直接在订单详情里修改收货地址后再付款哦。"], ["user", self.c("好的", "找不到在哪改")],
                     ["assistant", "在“我的订单-待付款-修改地址”里就能改，改完核对一下再付款~"]]
        elif o["status"] == "待发货":
            msgs += [["assistant", "订单还没发货，可以为您直接修改，麻烦把新的收件人、电话和地址发我~"], ["user", new]]
            if self.r.random() < 0.5:
                msgs += [["assistant", f"已为您修改为：{name}，{phone}，{addr}，请您核对一下哦。"]]
            else:
                msgs += [["assistant", f"已修改成功，收件人{name}，电话{self.pii.masked_mobile(phone)}，请您核对~"]]
            msgs += [["user", self.c("对的", "没问题")]]
        else:
            pb = self.playbook["address_change"]
            msgs += [["assistant", f"亲，订单已经由{o['shipment']['carrier']}发出了，{pb['allowed_promises'][1]}，但不保证一定改派成功，改派可能产生费用由您承担哦。"],
                     ["user", new],
                     ["assistant", "已提交改派申请，一般24小时内有结果；如果改派失败，建议您拒收后重新下单。"]]
            if self.r.random() < 0.3:
                idc = self.pii.id_card()
                msgs += [["user", f"要实名吗 我身份证号{idc}"], ["assistant", "不需要的亲，改地址不需要提供身份证号，请注意保护个人信息哦。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs[:10]

    def refused_delivery(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] == "已发货")
        pb = self.playbook["refused"]
        quality = self.r.random() < 0.35
        reason = (self.c("质量有问题，开箱发现有破洞", "外包装破了，怕东西坏了", "快递员说箱子湿了，里面怕是泡水了", "当面验货发现颜色发错了")
                  if quality else self.c("不想要了", "买错了", "买重复了", "别家买到更便宜的了", "尺码拍错了", "家里人已经买了"))
        msgs = [["user", self.c(f"我想拒收 {self.give_order(o)}", f"{self.give_order(o)}，快递到了我能直接拒收吗", "拒收怎么退款")]]
        if msgs[0][1] == "拒收怎么退款":
            msgs += [["assistant", "亲，麻烦提供一下订单号，帮您查看~"], ["user", self.give_order(o)]]
        msgs += [["assistant", "可以拒收的亲，请问是什么原因呢？"], ["user", reason]]
        if quality:
            msgs += [["assistant", self.c("抱歉给您添麻烦了，", "非常抱歉，", "了解了亲，") + f"{pb['allowed_promises'][1]}，"
                                   f"包裹退回仓库签收后1-3个工作日内退款{yuan(o['paid_fen'])}，原路退回。"]]
        else:
            msgs += [["assistant", self.c("好的，", "明白了亲，", "可以的，") + f"拒收后包裹会退回仓库，{pb['allowed_promises'][0]}。"
                                   + self.c("非质量问题拒收的来回运费需要您承担，会从退款里扣除，以实际运费为准哦。",
                                            "因为不是质量问题，来回运费需要您承担，会从退款中扣除，金额以实际运费为准。")]]
        if self.r.random() < 0.5:
            msgs += [["user", self.c("能马上退吗", "拒收完就退款吧")],
                     ["assistant", "抱歉亲，需要等包裹退回仓库签收后才能退款，一般1-3个工作日，请您理解~"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def _return_verdict(self, p: Product, signed: datetime, opened: bool) -> str:
        pol = self.policy.get(p.category, self.policy["*"])
        days = (self.when - signed).days
        excepted = opened and p.category in ("袜子",) or opened and "内裤" in p.name
        if days >= pol["return_days"]:
            extra = (f"不过在{pol['exchange_days']}天换货期内，可以换码/换色；" if days < pol["exchange_days"] else "")
            return (f"亲，您{cn_date(signed)}签收，已经超过{pol['return_days']}天无理由退货期了，{extra}"
                    "如有质量问题可以申请售后处理。")
        if excepted:
            return f"亲，{p.name}属于贴身类商品，" + "；".join(pol["exceptions"] or ["拆封后不支持7天无理由退货"]) + "。如果是质量问题，可以拍照给我们处理。"
        return (f"可以的亲，您{cn_date(signed)}签收，还在{pol['return_days']}天无理由退货期内。{p.category}需要"
                f"{'、'.join(pol['conditions'])}，退回运费由{pol['shipping_paid_by'].replace('（', '承担（', 1)}。请在订单页申请退货，寄回后仓库签收1-3个工作日内退款。")

    def return_request(self) -> list[list[str]]:
        if self.r.random() < 0.2:
            # pre-sale question about the exceptions
            self.when = self.at_random_day()
            p = self.pick(where=lambda x: "定制" in x.name or "内裤" in x.name or x.category == "袜子")
            self.ref_sku(p)
            m = self.mention(p)
            pol = self.policy.get(p.category, self.policy["*"])
            exc = [e for e in pol["exceptions"] if ("定制" in e or "刻字" in e) == ("定制" in p.name)] or pol["exceptions"]
            if "定制" in p.name:
                msgs = [["user", self.c(f"{m}印了字还能退吗", f"{m}支持7天无理由吗", f"定制的{m}做错了怎么办")],
                        ["assistant", f"亲，{exc[0]}，如果是我们做错了内容或有质量问题可以免费重做或退款哦。下单前请仔细核对刺绣/刻字内容~"]]
                if self.r.random() < 0.6:
                    msgs += [["user", self.c("定制要多久发货", "多久能做好")],
                             ["assistant", "定制款下单后7-10天发货，急用的话可以备注，我们尽量优先排单。"]]
            else:
                worn = self.r.random() < 0.5
                q = (self.c(f"{m}穿了一次不合适能退吗", f"{m}拆开试了下 能退吗") if worn
                     else self.c(f"{m}还没拆封，能7天无理由吗", f"{m}买了不合适能退吗", f"{m}支持七天无理由不"))
                a = (f"抱歉亲，{exc[0]}，如果是质量问题可以拍照给我们处理。" if worn
                     else f"未拆封的{p.name}支持7天无理由退货哦；{exc[0]}，质量问题除外。")
                msgs = [["user", q], ["assistant", a]]
                if self.r.random() < 0.5:
                    msgs += [["user", self.c("那换尺码呢", "可以换货吗")],
                             ["assistant", f"未拆封的签收{pol['exchange_days']}天内可以换尺码；已拆封穿着的贴身类商品不支持换货，请谅解~"]]
            msgs += [["user", self.c(*USER_BYE, "那我考虑下", "好吧")]]
            return msgs
        o = self.use_order(lambda o: o["status"] in ("已签收", "已完成"))
        p = self.r.choice(self.paid_items(o))
        self.ref_sku(p)
        signed = self.signed_at(o)
        opened = self.r.random() < 0.5 and (p.category == "袜子" or "内裤" in p.name)
        why = self.c("尺码不合适", "颜色和图片不一样", "不喜欢", "买多了") + ("，拆开试穿了一下" if opened else "")
        msgs = [["user", self.c(f"我要退货 {self.give_order(o)}", f"{self.mention(p)}想退了，{self.give_order(o)}", f"{self.give_order(o)} 能退吗")],
                ["assistant", "好的亲，请问是什么原因要退呢？"], ["user", why],
                ["assistant", self._return_verdict(p, signed, opened)]]
        if self.r.random() < 0.35:
            card = self.pii.bank_card()
            msgs += [["user", self.c(f"退到我银行卡吧 {card}", f"钱退到这张卡{card}")],
                     ["assistant", "亲，退款会原路退回到您的付款账户，不需要提供银行卡号哦，请注意保护个人信息。"]]
        elif self.r.random() < 0.3:
            msgs += [["user", self.c("运费谁出", "运费险有吗")],
                     ["assistant", "非质量问题退回运费由您承担，如果下单时买了运费险，会按运费险规则理赔；质量问题运费我们承担。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def exchange_request(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] in ("已签收", "已完成") and any(len(self.by_sku[i["sku"]].sizes) > 2 for i in o["items"]))
        p = self.r.choice([x for x in self.paid_items(o) if len(x.sizes) > 2] or self.paid_items(o))
        self.ref_sku(p)
        signed = self.signed_at(o)
        pol = self.policy.get(p.category, self.policy["*"])
        days = (self.when - signed).days
        k = self.r.randrange(0, len(p.sizes) - 1)
        small = self.r.random() < 0.6
        frm, to = (p.sizes[k], p.sizes[k + 1]) if small else (p.sizes[k + 1], p.sizes[k])
        fit = "小了" if small else "大了"
        if self.r.random() < 0.5:
            msgs = [["user", self.c(f"{self.give_order(o)} 想换个码 {frm}{fit}，换{to}",
                                    f"{self.give_order(o)}，{self.mention(p)}{frm}码{fit}，能换{to}吗")]]
        else:
            msgs = [["user", self.c(f"{self.mention(p)}{frm}码{fit}，想换{to}", f"能换货吗 {frm}的{fit} 换成{to}")],
                    ["assistant", "好的亲，麻烦提供一下订单号~"], ["user", self.give_order(o)]]
        if days < pol["exchange_days"]:
            if p.stock == 0:
                a = f"您{cn_date(signed)}签收，在{pol['exchange_days']}天换货期内，但{p.name}目前缺货，没法换{to}码，建议您申请退货后再选其他款，抱歉~"
            else:
                a = (f"您{cn_date(signed)}签收，在{pol['exchange_days']}天换货期内，{to}码有货。请在订单页申请换货，选择{to}码，"
                     f"商品需{'、'.join(pol['conditions'])}，我们收到退回的商品后发出新的。")
        else:
            a = f"抱歉亲，您{cn_date(signed)}签收，已超过{pol['exchange_days']}天换货期，无法换货了，如有质量问题可以申请售后维修。"
        msgs += [["assistant", a]]
        if days < pol["exchange_days"] and p.stock and self.r.random() < 0.5:
            name, phone, addr = self.pii.name(), self.pii.mobile(), self.pii.address()
            msgs += [["user", self.c(f"换的寄到 {addr}，{name} {phone}", f"新地址{addr} 收件人{name} 电话{phone}")],
                     ["assistant", "好的，已在换货单备注新地址，换新商品会寄到这个地址。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def refund_status(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] in ("退款中", "已取消"))
        msgs = [["user", self.c(f"退款怎么还没到 {self.give_order(o)}", f"{self.give_order(o)} 退款到哪一步了", "我的退款呢")]]
        if msgs[0][1] == "我的退款呢":
            msgs += [["assistant", "亲，麻烦提供一下订单号，帮您查下退款进度~"], ["user", self.give_order(o)]]
        if o["status"] == "退款中":
            msgs += [["assistant", f"查到订单{o['order_no']}目前是退款中，退款金额{yuan(o['paid_fen'])}。退货仓库签收后1-3个工作日内审核并原路退回，"
                                   "银行卡到账时间以银行为准哦。"]]
        else:
            msgs += [["assistant", f"订单{o['order_no']}已取消，没有产生扣款，所以不会有退款记录哦。"]]
        if self.r.random() < 0.4:
            card = self.pii.bank_card()
            msgs += [["user", self.c(f"我卡号{card} 你查下到没", f"能不能退到{card}")],
                     ["assistant", "亲，退款是原路退回，不需要提供银行卡号，请不要在聊天里发送卡号哦。"]]
        if self.r.random() < 0.4:
            msgs += [["user", self.c("能快点吗", "都好几天了")], ["assistant", "已帮您催促财务加急处理，请再耐心等待一下，实在抱歉~"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def repair_request(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] in ("已签收", "已完成"))
        p = self.r.choice(self.paid_items(o))
        self.ref_sku(p)
        signed = self.signed_at(o)
        pol = self.policy.get(p.category, self.policy["*"])
        days = (self.when - signed).days
        issue = {"冲锋衣": "拉链坏了", "羽绒服": "拉链头掉了", "登山杖": "锁扣松了锁不紧", "保温杯": "不保温了", "徒步鞋": "鞋底开胶了",
                 "登山鞋": "鞋带扣掉了", "帐篷": "帐篷杆接头裂了", "双肩包": "背带断线了", "睡袋": "拉链卡住拉不动"}.get(p.category, "开线了")
        msgs = [["user", self.c(f"{self.mention(p)}{issue}，能修吗", f"{self.give_order(o)} {issue} 怎么保修", f"买的{self.mention(p)}{issue}")]]
        if pol["repair_days"] and days <= pol["repair_days"]:
            msgs += [["assistant", f"亲，{p.category}保修{pol['repair_days']}天，您{cn_date(signed)}签收，在保修期内可以免费维修。"
                                   f"请寄到{SHOP_ADDRESS}，包裹里附纸条写明订单号、问题和联系电话，维修周期约7-15天。"]]
            phone = self.pii.mobile()
            name = self.pii.name()
            msgs += [["user", self.c(f"好的 纸条写{name} {phone}可以吧", f"我叫{name}，电话{phone}，寄过去了")],
                     ["assistant", self.c("可以的，收到后会第一时间处理并短信通知您。", "好的，收到包裹后会联系您~")]]
        elif pol["repair_days"] == 0:
            msgs += [["assistant", f"抱歉亲，{p.category}属于消耗品不提供保修服务，如是收到时就有质量问题可以拍照给我们。"]]
        else:
            msgs += [["assistant", f"亲，{p.category}保修期{pol['repair_days']}天，已经过保了，可以付费维修，费用按实际配件计算。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def invoice(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["status"] in ("待发货", "已发货", "已签收", "已完成"))
        email = self.pii.email()
        company = self.r.random() < 0.5
        msgs = [["user", self.c(f"能开发票吗 {self.give_order(o)}", f"{self.give_order(o)} 需要开票", "我要开发票")]]
        if msgs[0][1] == "我要开发票":
            msgs += [["assistant", "可以的亲，麻烦提供一下订单号~"], ["user", self.give_order(o)]]
        msgs += [["assistant", f"可以开电子普通发票，金额{yuan(o['paid_fen'])}，抬头是个人还是单位呢？单位的话需要提供税号哦。"]]
        if company:
            title = self.c("杭州云栖科技有限公司", "上海远山户外用品有限公司", "成都蜀道旅行社有限公司", "深圳北纬三十度文化传媒有限公司")
            msgs += [["user", f"单位，{title}，税号{self.pii.uscc()}，发到{email}"]]
        else:
            name = self.pii.name()
            if self.r.random() < 0.4:
                msgs += [["user", f"个人，{name}，身份证号{self.pii.id_card()}，发到{email}"],
                         ["assistant", "亲，个人抬头只需要姓名，不需要身份证号哦，请注意保护个人信息。"]]
            else:
                msgs += [["user", self.c(f"个人 {name} 发邮箱{email}", f"抬头写{name}就行，邮箱{email}")]]
        msgs += [["assistant", "好的，已登记，确认收货后24小时内开具并发送到您的邮箱，也可以在订单详情下载。" if o["status"] != "已完成"
                  else "好的，订单已完成，会在24小时内开具并发送到您的邮箱~"]]
        if self.r.random() < 0.3:
            msgs += [["user", "能开专票吗"], ["assistant", "可以的，专票需要单位名称、税号、地址电话、开户行及账号，开好后寄纸质发票给您。"]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def complaint(self) -> list[list[str]]:
        o = self.use_order(lambda o: o["shipment"] is not None)
        topic = self.c("你们客服态度太差了", "发货这么慢还不给解释", "衣服洗一次就掉色", "宣传说防水结果一淋就湿", "退款拖了这么久")
        msgs = [["user", f"{topic}！我要投诉 {self.give_order(o)}" + self.c("", "😡", "！！")],
                ["assistant", "非常抱歉给您带来不好的体验，您的反馈我已经记录，能具体说一下情况吗？"],
                ["user", self.c("说了好几遍了都没人管", "就是这个订单，你们看着办", "我要求赔偿")]]
        contact = self.r.random()
        if contact < 0.4:
            ph = self.pii.mobile()
            msgs += [["user", f"让你们主管打我电话{ph}"], ["assistant", f"好的，已升级客服主管，24小时内致电{self.pii.masked_mobile(ph)}和您沟通处理方案。"]]
        elif contact < 0.6:
            ll = self.pii.landline()
            msgs += [["user", f"打我公司座机{ll}，白天都在"], ["assistant", "好的，已升级客服主管，24小时内致电您留的座机沟通处理方案。"]]
        elif contact < 0.8:
            idc = self.pii.id_card()
            msgs += [["user", f"我身份证号{idc}，你们随便查，我不是恶意的"],
                     ["assistant", "亲，处理投诉不需要身份证号，请不要在聊天里发送哦。已为您升级客服主管，24小时内联系您。"]]
        else:
            em = self.pii.email()
            msgs += [["user", f"处理结果发我邮箱 {em}"], ["assistant", "好的，已升级客服主管，24小时内给您回复处理结果。"]]
        msgs += [["user", self.c("行 等你们电话", "再处理不好我就去12315", "哎")]]
        if self.r.random() < 0.6:
            msgs += [["assistant", "理解您的心情，我们一定认真处理，再次向您道歉🙏"]]
        return msgs

    def human_handoff(self) -> list[list[str]]:
        self.when = self.at_random_day()
        msgs = [["user", self.c("转人工", "人工", "我要找人工客服", "别机器人了 叫真人", "人工客服！！", "找个真人跟我说", "转人工转人工")],
                ["assistant", self.c("正在为您转接人工客服，请稍候~", "好的，马上为您转接人工，当前排队1人，请稍等~")],
                ["assistant", self.c("您好，我是人工客服小岚，请问有什么可以帮您？", "您好，人工客服为您服务，请讲~")]]
        follow = self.r.random()
        if follow < 0.3:
            o = self.use_order(lambda o: True)
            msgs += [["user", self.c(f"查下订单 {self.give_order(o)}", f"{self.give_order(o)} 什么情况")], ["assistant", self._status_answer(o)]]
        elif follow < 0.6:
            p = self.pick()
            self.ref_sku(p)
            msgs += [["user", self.c(f"{self.mention(p)}多少钱", f"{self.mention(p)}还有货吗")],
                     ["assistant", self._price_answer(p) if self.r.random() < 0.5 else self._stock_answer(p, p.colors[0], None)]]
        else:
            msgs += [["user", self.c("机器人回答的看不懂", "刚才问的问题没解决", "我要说的事情比较复杂", "机器人答非所问")],
                     ["assistant", self.c("不好意思亲，您直接说具体问题，我来帮您处理~", "抱歉让您久等了，您说，我这边看着呢~")]]
        msgs += [["user", self.c(*USER_BYE)]]
        return msgs

    def greeting(self) -> list[list[str]]:
        self.when = self.at_random_day()
        msgs = [["user", self.c(*USER_HI)], ["assistant", self.c(*AGENT_HI)]]
        r = self.r.random()
        if r < 0.4:
            msgs += [["user", self.c("你们客服几点下班", "晚上有人吗")], ["assistant", "人工客服每天9:00-24:00在线，其余时间可以留言，上班后第一时间回复您~"]]
        elif r < 0.7:
            msgs += [["user", self.c("没事 先看看", "随便逛逛")], ["assistant", "好的亲，有需要随时叫我哦~"]]
        else:
            msgs += [["user", "早上好"], ["user", "在吗"], ["assistant", "早上好亲，小岚在的，请问有什么可以帮您？"]]
        msgs += [["user", self.c(*USER_BYE, "👍", "嗯嗯")]]
        return msgs

    def other(self) -> list[list[str]]:
        self.when = self.at_random_day()
        topic = self.r.randrange(10)
        if topic == 0:
            msgs = [["user", self.c("你们是正品吗", "是官方店吗", "会不会是假货")],
                    ["assistant", "本店是山岚品牌官方旗舰店，所有商品均为正品，支持专柜验货。"]]
        elif topic == 1:
            msgs = [["user", self.c("从哪发货", "用的什么快递", "发什么快递啊")],
                    ["assistant", "杭州仓发货，默认圆通/中通，订单满299元或登山鞋、帐篷类默认顺丰，需要京东物流可以备注。"]]
        elif topic == 2:
            wx = self.c("shanlan_" + str(self.r.randrange(1000, 9999)), str(self.r.randrange(100000000, 999999999)))
            msgs = [["user", self.c(f"加个微信吧 我微信{wx}", f"有微信群吗 拉我一下 {wx}")],
                    ["assistant", "抱歉亲，平台规定不能私下加微信，有问题随时在这里找我们就行~"]]
        elif topic == 3:
            msgs = [["user", self.c(f"会员积分怎么用 我会员号{self.pii.not_a_phone()}", "积分能抵钱吗", "我的积分怎么没到账")],
                    ["assistant", "每消费1元积1分，100积分可抵1元，结算页可以直接抵扣，积分在确认收货后到账哦。"]]
        elif topic == 4:
            msgs = [["user", self.c("送人的 能不放价签吗", "送礼的，发货单能不放吗")],
                    ["assistant", "可以的亲，下单时备注“送礼不放价签”，我们不放发货单哦。"]]
        elif topic == 5:
            msgs = [["user", self.c("你们线下有实体店吗", "杭州有门店吗 想去试穿")],
                    ["assistant", "目前只有线上旗舰店，暂时没有线下门店哦，线上购买同样享受售后服务。"]]
        elif topic == 6:
            msgs = [["user", self.c("能寄到香港吗", "可以发国外吗", "台湾能寄吗")],
                    ["assistant", "抱歉亲，目前只支持中国大陆地区配送，暂不支持港澳台及海外地址。"]]
        elif topic == 7:
            p = self.pick(cat=self.c("冲锋衣", "羽绒服"))
            self.ref_sku(p)
            msgs = [["user", self.c(f"{self.mention(p)}怎么洗", f"{self.mention(p)}能机洗吗")],
                    ["assistant", f"{p.name}建议用中性洗涤剂30℃以下手洗或洗衣机轻柔档，不要用柔顺剂和漂白剂，"
                                  + ("羽绒服洗后低温烘干拍松。" if p.category == "羽绒服" else "晾干后低温熨烫或烘干可以恢复防泼水性能。")]]
        elif topic == 8:
            msgs = [["user", self.c("你们招代理吗", "可以批发吗 量大")],
                    ["assistant", "亲，我们暂不招代理，团体采购50件以上可以联系客服申请团购价哦。"]]
        else:
            msgs = [["user", self.c("可以预约发货吗 下周才在家", "能晚几天发吗")],
                    ["assistant", "可以的亲，下单时备注希望的发货日期，我们最多为您延后7天发货。"]]
        if self.r.random() < 0.3:
            msgs = [["user", self.c(*USER_HI)], ["assistant", self.c(*AGENT_HI)]] + msgs
        msgs += [["user", self.c(*USER_BYE)]]
        if self.r.random() < 0.6:
            msgs += [["assistant", self.c(*AGENT_BYE)]]
        return msgs

    # ---- realism: typos, emoji, split messages -------------------------------------------------------------------
    def noise(self, msgs: list[list[str]]) -> list[list[str]]:
        out = []
        for role, text in msgs:
            if role == "user" and text and self.r.random() < 0.08:
                a, b = self.r.choice(TYPOS)
                if a in text:
                    text = text.replace(a, b, 1)
            if role == "user" and self.r.random() < 0.06:
                text += self.r.choice(EMOJI)
            if role == "assistant" and text and not text.startswith(
                    ("亲", "您好", "好的", "抱歉", "非常", "实在", "不客气", "感谢", "祝", "嗯", "可以", "明白", "了解")) \
                    and self.r.random() < 0.3:
                text = self.r.choice(["亲，", "您好，", "好的亲，", "嗯嗯，", "亲亲，"]) + text
            out.append([role, text])
        if len(out) < 10 and self.r.random() < 0.15:
            idx = [i for i, (r, t) in enumerate(out) if r == "user" and "，" in t.strip("，")]
            if idx:
                i = self.r.choice(idx)
                head, tail = out[i][1].split("，", 1)
                if head and tail:
                    out[i:i + 1] = [["user", head], ["user", tail]]
        if len(out) < 10 and self.r.random() < 0.08:
            out.insert(0, ["user", self.c(f"你好，我叫{self.pii.name()}", f"我是{self.pii.name()}", "在吗在吗")])
        return out[:10]


def mojibake(text: str) -> str:
    """UTF-8 bytes mis-decoded as GBK, the classic garbled-log line (no line breaks)."""
    g = text.encode("utf-8").decode("gbk", errors="replace")
    return "".join(ch for ch in g if ch.isprintable())


def near_duplicate(msgs: list[list[str]], rng: random.Random) -> list[list[str]]:
    """A copy with a small surface edit: punctuation, a polite particle, an emoji."""
    out = [list(m) for m in msgs]
    users = [i for i, m in enumerate(out) if m[0] == "user"]
    i = rng.choice(users)
    edit = rng.choice(["punct", "particle", "emoji", "space"])
    t = out[i][1]
    if edit == "punct":
        t = t.replace("，", ",").replace("？", "?") if ("，" in t or "？" in t) else t + "？"
    elif edit == "particle":
        t = "亲，" + t if not t.startswith("亲") else t[1:]
    elif edit == "emoji":
        t = t + rng.choice(EMOJI)
    else:
        k = rng.randrange(1, max(2, len(t)))
        t = t.replace(" ", "") if " " in t else t[:k] + " " + t[k:]
    if t == out[i][1]:
        t += "。"
    out[i][1] = t
    return out


def shingles(msgs: list[list[str]]) -> set[str]:
    text = "".join(t for _, t in msgs)
    return {text[i:i + 3] for i in range(len(text) - 2)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def build_dialogues(w: Writer, rng: random.Random) -> list[dict[str, Any]]:
    plan = [intent for intent, n in WEIGHTS.items() for _ in range(n)]
    rng.shuffle(plan)
    base: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    by_intent: dict[str, list[set[str]]] = {}
    for intent in plan:
        for _ in range(30):
            w.refs = {}
            msgs = w.noise(getattr(w, intent)())
            key = tuple(t for _, t in msgs)
            sh = shingles(msgs)
            if (key not in seen and 3 <= len(msgs) <= 10 and msgs[0][0] == "user"
                    and all(jaccard(sh, other) <= 0.8 for other in by_intent.get(intent, []))):
                break
        else:  # pragma: no cover - the templates are varied enough
            raise RuntimeError(f"could not write a new {intent} dialogue")
        seen.add(key)
        by_intent.setdefault(intent, []).append(sh)
        base.append({"intent": intent, "messages": msgs, "date": iso(w.when), "refs": dict(w.refs),
                     "variant": "clean"})
    extra: list[dict[str, Any]] = []
    n_exact, n_near = round(len(base) * 0.03), round(len(base) * 0.02)
    for src in rng.sample(base, n_exact):
        extra.append(dict(src, messages=[list(m) for m in src["messages"]], variant="exact_duplicate", src=src))
    for src in rng.sample(base, n_near):
        extra.append(dict(src, messages=near_duplicate(src["messages"], rng), variant="near_duplicate", src=src))
    # dirty records so that cleaning has work
    dirty_specs = ["empty_turn", "null_turn", "no_agent_reply", "garbled_user", "blank_turn", "garbled_agent"]
    for spec in dirty_specs:
        intent = rng.choice(["product_inquiry", "order_status", "logistics_tracking", "return_request", "stock_inquiry"])
        w.refs = {}
        msgs = [list(m) for m in getattr(w, intent)()][:8]
        if spec == "no_agent_reply":
            intent = "human_handoff"
            w.refs = {}
            msgs = [["user", "在吗"], ["user", "有人吗？？"], ["user", "怎么一直没人回 我要人工"]]
        elif spec in ("empty_turn", "blank_turn"):
            i = 1 + 2 * rng.randrange(0, max(1, len(msgs) // 2 - 1))
            msgs.insert(i, ["user" if spec == "empty_turn" else "assistant", "" if spec == "empty_turn" else "   "])
        elif spec == "null_turn":
            i = next(k for k, m in enumerate(msgs) if m[0] == "assistant")
            msgs[i][1] = "NULL"
        elif spec == "garbled_user":
            i = next(k for k, m in enumerate(msgs) if m[0] == "user")
            msgs[i][1] = mojibake(msgs[i][1])
        else:
            i = next(k for k, m in enumerate(msgs) if m[0] == "assistant")
            msgs[i][1] = "锟斤拷锟斤拷烫烫烫" + mojibake(msgs[i][1])[:20]
        extra.append({"intent": intent, "messages": msgs, "date": iso(w.when), "refs": dict(w.refs),
                      "variant": "dirty", "dirty": spec})
    allrecs = list(base)
    for rec in extra:
        allrecs.insert(rng.randrange(0, len(allrecs) + 1), rec)
    for i, rec in enumerate(allrecs):
        rec["id"] = f"d{i + 1:04d}"
    out = []
    for rec in allrecs:
        meta: dict[str, Any] = {"intent": rec["intent"], "date": rec["date"], "variant": rec["variant"]}
        if "src" in rec:
            meta["duplicate_of"] = rec["src"]["id"]
        if "dirty" in rec:
            meta["dirty"] = rec["dirty"]
        if rec["refs"]:
            meta["refs"] = rec["refs"]
        for _, t in rec["messages"]:
            assert "\n" not in t and "\r" not in t, t
        out.append({"id": rec["id"], "messages": [{"role": r, "content": t} for r, t in rec["messages"]], "meta": meta})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------
SPEAKER = {"user": "顾客", "assistant": "客服"}


def to_alpaca(messages: list[dict[str, str]]) -> dict[str, Any]:
    """Alpaca with history. Consecutive messages of one speaker are joined with a newline (the format has no
    other way to hold them); a dialogue that ends on the customer gets an empty output."""
    merged: list[list[str]] = []
    for m in messages:
        if merged and merged[-1][0] == m["role"]:
            merged[-1][1] += "\n" + m["content"]
        else:
            merged.append([m["role"], m["content"]])
    pairs: list[list[str]] = []
    i = 0
    while i < len(merged):
        q = merged[i][1] if merged[i][0] == "user" else ""
        if merged[i][0] == "user":
            i += 1
        a = merged[i][1] if i < len(merged) and merged[i][0] == "assistant" else ""
        if i < len(merged) and merged[i][0] == "assistant":
            i += 1
        pairs.append([q, a])
    last = pairs[-1]
    return {"instruction": last[0], "input": "", "output": last[1], "history": pairs[:-1]}


def render(out: dict[str, Any]) -> dict[str, bytes]:
    """All files as bytes, keyed by file name."""
    def dumps(obj: Any, indent: int | None = 1) -> bytes:
        return (json.dumps(obj, ensure_ascii=False, indent=indent) + "\n").encode("utf-8")

    files: dict[str, bytes] = {}
    buf = io.StringIO()
    cw = csv.writer(buf, lineterminator="\n")
    cw.writerow(["sku", "name", "aliases", "category", "brand", "price_fen", "stock", "colors", "sizes", "material",
                 "style", "description"])
    for p in out["products"]:
        cw.writerow([p.sku, p.name, "|".join(p.aliases), p.category, p.brand, p.price_fen, p.stock, "|".join(p.colors),
                     "|".join(p.sizes), p.material, p.style, p.description])
    files["products.csv"] = buf.getvalue().encode("utf-8")
    buf = io.StringIO()
    cw = csv.writer(buf, lineterminator="\n")
    cw.writerow(["sku", "relation", "target_sku"])
    cw.writerows(out["relations"])
    files["relations.csv"] = buf.getvalue().encode("utf-8")
    files["promotions.json"] = dumps(out["promotions"], 2)
    files["policies.json"] = dumps(out["policies"], 2)
    files["playbooks.json"] = dumps(out["playbooks"], 2)
    files["orders.json"] = dumps(out["orders"], 1)
    files["faq.json"] = dumps(out["faq"], 2)

    dialogues = out["dialogues"]
    files["dialogues.jsonl"] = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dialogues).encode("utf-8")
    buf = io.StringIO()
    cw = csv.writer(buf, lineterminator="\n")
    cw.writerow(["session_id", "turn", "speaker", "content"])
    for d in dialogues:
        for k, m in enumerate(d["messages"], 1):
            cw.writerow([d["id"], k, SPEAKER[m["role"]], m["content"]])
    files["dialogues.csv"] = buf.getvalue().encode("utf-8")
    files["dialogues.txt"] = "\n".join(
        "".join(f"{SPEAKER[m['role']]}：{m['content']}\n" for m in d["messages"]) for d in dialogues).encode("utf-8")
    files["dialogues_sharegpt.json"] = dumps(
        [{"conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                            for m in d["messages"]]} for d in dialogues], 1)
    files["dialogues_alpaca.json"] = dumps([to_alpaca(d["messages"]) for d in dialogues], 1)
    files["dataset_info.json"] = dumps({
        "kefu_shop_sharegpt": {
            "file_name": "dialogues_sharegpt.json", "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        },
        "kefu_shop_alpaca": {
            "file_name": "dialogues_alpaca.json", "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"},
        },
    }, 2)
    return files


def build(seed: int = 7) -> dict[str, Any]:
    """Every object of the sample shop, from one seed."""
    rng = random.Random(seed)
    products = build_products(rng)
    relations = build_relations(products, rng)
    promotions = build_promotions(products)
    policies = build_policies()
    playbooks = build_playbooks()
    orders = build_orders(products, promotions, rng)
    faq = build_faq(products, promotions, policies)
    writer = Writer(rng, products, promotions, orders, policies, playbooks)
    dialogues = build_dialogues(writer, rng)
    return {"products": products, "relations": relations, "promotions": promotions, "policies": policies,
            "playbooks": playbooks, "orders": orders, "faq": faq, "dialogues": dialogues}


def generate(out_dir: Path, seed: int = 7) -> dict[str, int]:
    """Write every file of SCHEMA.md into ``out_dir``; returns {file name: size in bytes}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = render(build(seed))
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return {name: len(data) for name, data in files.items()}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for fname, size in generate(target).items():
        print(f"{fname:28s} {size:>9,d} bytes")
